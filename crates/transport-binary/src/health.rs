//! Which servers are left alone after failing, shared by every pooled handle.
//!
//! libmemcached keeps its failure records per handle and counts only failed connects: a
//! server that accepts connections and never answers (hung, SIGSTOPped, overloaded) costs
//! every request on every handle a whole poll timeout, for as long as it hangs. The
//! transport therefore keeps one record per server for all its handles, with the text
//! transport's rules (`newcache-transport-text`'s cluster):
//!
//! - a connect failure, a timeout or an I/O error counts against the server; a success clears
//!   its record; a reply the server gave (`CLIENT_ERROR`, `SERVER_ERROR`, a refused command)
//!   is neither;
//! - at `failure_limit` failures in a row the server is left alone for `retry_timeout`:
//!   requests for its keys fail at once with [`Error::ServerDown`]
//!   without touching libmemcached; after the wait one more failure leaves it alone again;
//! - a cluster of one server never leaves it alone (there is nowhere else for its keys to go);
//! - with `remove_failed`, failed connects are libmemcached's to count: it ejects the server
//!   (and rebuilds a consistent ring without it) by its own rules, which placement must
//!   follow; only timeouts and I/O errors count here then;
//! - requests in flight together that fail together are one failure ([`Ticket`]), as they
//!   are to libmemcached, whose handles have one request each and count their own.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use newcache_transport::{Error, FailureTicket, FailureTickets};

#[derive(Debug, Default)]
struct Record {
    /// What a request saw when it was sent ([`Ticket`]).
    counted: FailureTickets,
    failures: AtomicU32,
    /// Milliseconds since the epoch until which the server is left alone; 0: up.
    down_until: AtomicU64,
}

/// What a request saw of its server's record before it was sent ([`Health::ticket`]),
/// handed back with its outcome: a failure counts only when no other was counted since
/// ([`FailureTickets`]). Counted one per caller, a 0.7 s SIGSTOP under 64 threads sharing
/// the record left the healthy server alone for `retry_timeout` (6,255 `ServerDown` in an
/// outside audit), where each of pylibmc's handles counts one failure of its own.
pub(crate) type Ticket = FailureTicket;

/// The failure records of a transport's servers, by configured index.
#[derive(Debug)]
pub(crate) struct Health {
    records: Vec<Record>,
    failure_limit: u32,
    retry_timeout: Duration,
    remove_failed: bool,
    epoch: Instant,
}

impl Health {
    pub(crate) fn new(
        servers: usize,
        failure_limit: u32,
        retry_timeout: Duration,
        remove_failed: bool,
    ) -> Health {
        Health {
            records: (0..servers).map(|_| Record::default()).collect(),
            failure_limit: failure_limit.max(1),
            retry_timeout,
            remove_failed,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1 keeps 0 free to mean "up".
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// `Ok` when requests may go to server `index`; else how long until it is tried again.
    pub(crate) fn check(&self, index: usize) -> Result<(), Duration> {
        let Some(record) = self.records.get(index) else {
            return Ok(());
        };
        let until = record.down_until.load(Ordering::Relaxed);
        if until == 0 {
            return Ok(());
        }
        let now = self.now_ms();
        if now < until {
            return Err(Duration::from_millis(until - now));
        }
        Ok(())
    }

    /// Server `index`'s record as a request about to be sent sees it.
    pub(crate) fn ticket(&self, index: usize) -> Ticket {
        match self.records.get(index) {
            Some(r) => r.counted.ticket(),
            None => FailureTickets::default().ticket(),
        }
    }

    /// Records how a request to server `index`, sent with `ticket`, ended.
    pub(crate) fn report<T>(&self, index: usize, ticket: Ticket, outcome: &Result<T, Error>) {
        match outcome {
            Ok(_) => self.succeeded(index),
            Err(e) => self.failed_with(index, ticket, e),
        }
    }

    /// The server answered.
    pub(crate) fn succeeded(&self, index: usize) {
        let Some(record) = self.records.get(index) else {
            return;
        };
        // Two loads on the fast path instead of two stores: most requests succeed.
        if record.failures.load(Ordering::Relaxed) != 0 {
            record.failures.store(0, Ordering::Relaxed);
        }
        if record.down_until.load(Ordering::Relaxed) != 0 {
            record.down_until.store(0, Ordering::Relaxed);
        }
    }

    /// The request to server `index` failed with `error`: counted when it is a failure of
    /// the server (see the module documentation).
    pub(crate) fn failed_with(&self, index: usize, ticket: Ticket, error: &Error) {
        let counts = match error {
            Error::Timeout { .. } | Error::Io { .. } => true,
            Error::Connect { .. } => !self.remove_failed,
            _ => false,
        };
        if counts {
            self.failed(index, ticket);
        }
    }

    fn failed(&self, index: usize, ticket: Ticket) {
        let Some(record) = self.records.get(index) else {
            return;
        };
        // Another request sent with this one was counted already: the same failure.
        if !record.counted.count(ticket) {
            return;
        }
        let failures = record
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures < self.failure_limit || self.records.len() == 1 || self.retry_timeout.is_zero()
        {
            // Under the limit, the only server, or retried on every request: keep trying.
            return;
        }
        let wait = u64::try_from(self.retry_timeout.as_millis()).unwrap_or(u64::MAX);
        record
            .down_until
            .store(self.now_ms().saturating_add(wait), Ordering::Relaxed);
        // After the wait, one more failure leaves it alone again.
        record
            .failures
            .store(self.failure_limit - 1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn timeout() -> Error {
        Error::Timeout {
            server: "s".into(),
            after: Duration::from_millis(1),
        }
    }

    fn refused() -> Error {
        Error::Connect {
            server: "s".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        }
    }

    #[test]
    fn requests_sent_together_that_fail_together_count_once() {
        let h = Health::new(3, 2, Duration::from_secs(60), false);
        // 64 requests sent, then all timing out (a SIGSTOP): one failure.
        let tickets: Vec<Ticket> = (0..64).map(|_| h.ticket(1)).collect();
        for &t in &tickets {
            h.failed_with(1, t, &timeout());
        }
        assert!(h.check(1).is_ok(), "one failure, under the limit of 2");
        // The next request sent after it, failing too: the second in a row.
        h.failed_with(1, h.ticket(1), &timeout());
        assert!(h.check(1).is_err());
    }

    #[test]
    fn a_server_is_left_alone_only_after_failure_limit_failures_in_a_row() {
        let h = Health::new(3, 3, Duration::from_secs(60), false);
        h.failed_with(1, h.ticket(1), &timeout());
        h.failed_with(1, h.ticket(1), &refused());
        assert!(h.check(1).is_ok());
        // A success clears the count.
        h.succeeded(1);
        h.failed_with(1, h.ticket(1), &timeout());
        h.failed_with(1, h.ticket(1), &timeout());
        assert!(h.check(1).is_ok());
        h.failed_with(1, h.ticket(1), &timeout());
        let retry_in = h.check(1).unwrap_err();
        assert!(retry_in > Duration::from_secs(59), "{retry_in:?}");
        assert!(h.check(0).is_ok() && h.check(2).is_ok());
        // Replies the server gave are not failures.
        let h = Health::new(2, 1, Duration::from_secs(60), false);
        for e in [
            Error::Server {
                server: "s".into(),
                message: "out of memory".into(),
            },
            Error::Protocol {
                server: "s".into(),
                detail: "x".into(),
            },
            Error::ServerDown {
                server: "s".into(),
                retry_in: Duration::ZERO,
            },
        ] {
            h.failed_with(0, h.ticket(0), &e);
        }
        assert!(h.check(0).is_ok());
    }

    #[test]
    fn after_the_wait_one_more_failure_leaves_it_alone_again() {
        // Long enough that a stalled test thread does not outlast it between two lines.
        let h = Health::new(2, 2, Duration::from_millis(300), false);
        h.failed_with(0, h.ticket(0), &timeout());
        h.failed_with(0, h.ticket(0), &timeout());
        assert!(h.check(0).is_err());
        std::thread::sleep(Duration::from_millis(350));
        assert!(h.check(0).is_ok(), "tried again after retry_timeout");
        h.failed_with(0, h.ticket(0), &timeout());
        assert!(h.check(0).is_err(), "one failure after the wait");
        std::thread::sleep(Duration::from_millis(350));
        h.succeeded(0);
        h.failed_with(0, h.ticket(0), &timeout());
        assert!(h.check(0).is_ok(), "a success cleared the record");
    }

    #[test]
    fn the_only_server_and_retry_timeout_zero_never_fail_fast() {
        let one = Health::new(1, 1, Duration::from_secs(60), false);
        let zero = Health::new(3, 1, Duration::ZERO, false);
        for _ in 0..10 {
            one.failed_with(0, one.ticket(0), &timeout());
            zero.failed_with(0, zero.ticket(0), &timeout());
        }
        assert!(one.check(0).is_ok() && zero.check(0).is_ok());
    }

    #[test]
    fn with_remove_failed_connect_failures_are_libmemcacheds_to_count() {
        let h = Health::new(2, 1, Duration::from_secs(60), true);
        h.failed_with(0, h.ticket(0), &refused());
        assert!(h.check(0).is_ok());
        h.failed_with(0, h.ticket(0), &timeout());
        assert!(h.check(0).is_err(), "a hung server is still left alone");
    }
}
