//! Counting a server's failures once per event, for the transports' failover records.

use std::sync::atomic::{AtomicU64, Ordering};

/// A server's failures as the requests sent to it see them: a request takes a
/// [`FailureTicket`] before it is sent, and its failure counts only when no other failure
/// was counted since ([`FailureTickets::count`]). Requests in flight together that one hang
/// or one kill fails are then one failure, as they are to libmemcached, whose handles have
/// one request each and keep their own counts: "failures in a row" are requests each sent
/// after the one before had failed. Counted one per request, a 0.7 s SIGSTOP under 64
/// concurrent callers sharing one record was 64 failures (an outside audit).
///
/// ```
/// use newcache_transport::FailureTickets;
///
/// let record = FailureTickets::default();
/// let (a, b) = (record.ticket(), record.ticket()); // two requests in flight together
/// assert!(record.count(a)); // the first failure counts
/// assert!(!record.count(b)); // the other is the same event
/// assert!(record.count(record.ticket())); // a request sent after it counts again
/// ```
#[derive(Debug, Default)]
pub struct FailureTickets(AtomicU64);

/// What a request saw of its server's failures before it was sent ([`FailureTickets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureTicket(u64);

impl FailureTickets {
    /// The ticket of a request about to be sent.
    pub fn ticket(&self) -> FailureTicket {
        FailureTicket(self.0.load(Ordering::Acquire))
    }

    /// Whether the failure of a request sent with `ticket` counts: true for the first
    /// failure counted since that ticket was taken, false for the others.
    pub fn count(&self, ticket: FailureTicket) -> bool {
        self.0
            .compare_exchange(
                ticket.0,
                ticket.0.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}
