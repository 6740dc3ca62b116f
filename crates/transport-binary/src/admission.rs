//! Whether a server takes commands from a transport without SASL credentials.
//!
//! memcached started with `-S` answers every binary command but `VERSION` from a connection
//! that has not authenticated with "auth error", and libmemcached 1.1.4 mishandles that
//! answer: a get reads it as a miss and keeps no error, a `touch` as a key not found, and an
//! `incr`/`decr` trips an assertion (`auto.cc:32`) that aborts the process (an outside
//! audit: exit 134 on every `incr` against such a server). So a transport that speaks the
//! binary protocol without credentials asks a server something harmless whose answer
//! libmemcached does report, the `delete` of a key no one uses ([`PROBE_KEY`]): before its
//! `incr`/`decr` to it, and after a miss from it, unless it answered one within the last
//! second ([`VALID_FOR_MS`]) on a connection the request did not open: a server restarted
//! with `-S` is met on a new connection, asked there (answered once for good, gets read
//! misses and an `incr` aborted, a review; for a second, an `incr` 25 ms after the restart
//! still did, another review). A multi-get that fails asks each of its servers. A server that refuses it
//! is [`Error::Auth`], and is asked again the next time. Asking only after a miss keeps a
//! server that hangs from costing a read timeout more (a multi-get over hung servers costs
//! one).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use libmemcached_sys::*;
use newcache_transport::{Error, Item, Result};

use crate::pool::Handle;
use crate::BinaryTransport;

/// How long a server's answer to the probe stands before it is asked again.
const VALID_FOR_MS: u64 = 1000;

/// What an authentication error says when the transport has no credentials.
pub(crate) const NO_CREDENTIALS: &str = ": the server requires SASL authentication (memcached -S), and this transport has no credentials: set username and password (URL: username=...&password=...)";

/// The key the probe deletes: one no application of newcache's uses.
const PROBE_KEY: &[u8] = b"newcache-sasl-probe";

/// Which servers are known to take this transport's commands.
#[derive(Debug)]
pub(crate) struct Admission {
    /// False when nothing is to be checked: the text protocol (memcached refuses it
    /// outright with `-S`), or SASL credentials (libmemcached authenticates every
    /// connection, and reports a refusal).
    needed: bool,
    /// Each server's, by its index: when it last answered the probe, in ms after `epoch`
    /// plus one (0: not since it was last refused, or never).
    admitted: Vec<AtomicU64>,
    epoch: Instant,
}

impl Admission {
    /// For `servers` servers, checked when `needed`.
    pub(crate) fn new(servers: usize, needed: bool) -> Admission {
        Admission {
            needed,
            admitted: (0..servers).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        }
    }

    /// Now, as `admitted` holds it.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// True when server `index` need not be asked now: nothing is checked, or it answered
    /// within [`VALID_FOR_MS`].
    fn known(&self, index: usize) -> bool {
        !self.needed
            || self.admitted.get(index).is_none_or(|at| {
                let at = at.load(Ordering::Relaxed);
                at != 0 && self.now().saturating_sub(at) < VALID_FOR_MS
            })
    }
}

/// What a probe of a server found.
enum Probe {
    /// It answered: it takes requests without credentials.
    Admitted,
    /// It requires SASL ([`Error::Auth`]).
    Refused(Error),
    /// It could not be asked (a connection refused, a timeout): that failure.
    Failed(Error),
}

impl BinaryTransport {
    /// Asks server `index` (on `h`, placed by `key`, a key of that server's) whether it takes
    /// requests without credentials, unless nothing is to be checked or it answered lately
    /// and `fresh` is false (the request did not open the connection it went on).
    fn probe(&self, h: &Handle, key: &[u8], index: usize, fresh: bool) -> Probe {
        let Some(admitted) = self.admission.admitted.get(index) else {
            return Probe::Admitted;
        };
        if !self.admission.needed || (!fresh && self.admission.known(index)) {
            return Probe::Admitted;
        }
        h.begin();
        // SAFETY: h is a live handle used by this thread only; both key buffers outlive
        // the call. The group key places the probe on the server `key` is placed on.
        let rc = unsafe {
            memcached_delete_by_key(
                h.as_ptr(),
                key.as_ptr().cast(),
                key.len(),
                PROBE_KEY.as_ptr().cast(),
                PROBE_KEY.len(),
                0,
            )
        };
        match rc {
            MEMCACHED_AUTH_FAILURE | MEMCACHED_AUTH_PROBLEM | MEMCACHED_AUTH_CONTINUE => {
                Probe::Refused(Error::Auth {
                    server: self.label(index),
                    message: format!("refused{NO_CREDENTIALS}"),
                })
            }
            MEMCACHED_SUCCESS | MEMCACHED_DELETED | MEMCACHED_NOTFOUND | MEMCACHED_BUFFERED => {
                admitted.store(self.admission.now(), Ordering::Relaxed);
                Probe::Admitted
            }
            rc => Probe::Failed(self.error(h, rc, self.label(index), "the SASL probe (a delete)")),
        }
    }

    /// Before a request libmemcached cannot survive a refusal of (`incr`/`decr`) on the
    /// server at `position` of `h`: `Ok` once the server is known to take requests without
    /// credentials; else the refusal ([`Error::Auth`]) or why it could not be asked, and
    /// the request is not sent.
    pub(crate) fn admit(&self, h: &Handle, key: &[u8], position: Option<usize>) -> Result<()> {
        // A request that opens a connection asks on it first, whatever the server answered
        // lately: a server restarted with `-S` is met on a new connection (a handle drops
        // the connections a server closed before it is used), and an `incr` in the second
        // after the restart aborted the process (a review).
        let fresh = self.opens_a_connection(h, position);
        match position.and_then(|p| self.server_at(p)) {
            Some(index) => match self.probe(h, key, index, fresh) {
                Probe::Admitted => Ok(()),
                Probe::Refused(e) | Probe::Failed(e) => Err(e),
            },
            None => Ok(()),
        }
    }

    /// True when a request on `h` to the server at `position` opens a connection to it (none
    /// is open), as far as libmemcached's private layout tells; false when nothing is to
    /// be checked.
    pub(crate) fn opens_a_connection(&self, h: &Handle, position: Option<usize>) -> bool {
        self.admission.needed
            && position
                .and_then(|p| self.fields_at(h, p))
                .is_some_and(|f| f.fd < 0)
    }

    /// [`confirm_miss`](Self::confirm_miss) after a request that opened its connection
    /// (`fresh`, from [`opens_a_connection`](Self::opens_a_connection) before it): asked
    /// whatever the server answered lately.
    pub(crate) fn confirm_miss_on(
        &self,
        h: &Handle,
        key: &[u8],
        position: Option<usize>,
        fresh: bool,
    ) -> Result<()> {
        match position.and_then(|p| self.server_at(p)) {
            Some(index) => match self.probe(h, key, index, fresh) {
                Probe::Refused(e) => Err(e),
                Probe::Admitted | Probe::Failed(_) => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// After a miss (or a key not found) from the server at `position` of `h`, which
    /// libmemcached also reports for a refusal: `Ok` when it is a miss, [`Error::Auth`] when
    /// the server requires SASL. A probe that could not be sent leaves the miss as it was:
    /// the server answered the request.
    pub(crate) fn confirm_miss(
        &self,
        h: &Handle,
        key: &[u8],
        position: Option<usize>,
    ) -> Result<()> {
        self.confirm_miss_on(h, key, position, false)
    }

    /// After a multi-get on `h` of `keys` (each placed at the position in `at`), which
    /// found `items` (each at its key's place in `keys`): [`confirm_miss`](Self::confirm_miss) for each server asked (in
    /// `asked`, less the positions in `failed`) that gave no item, by one of its keys. No
    /// work once every server answered a probe.
    pub(crate) fn confirm_misses(
        &self,
        h: &Handle,
        (keys, at): (&[&[u8]], &[Option<usize>]),
        asked: &[usize],
        failed: &[(usize, Error)],
        items: &[Option<Item>],
    ) -> Result<()> {
        if !self.admission.needed {
            return Ok(());
        }
        for &p in asked {
            let known = self.server_at(p).is_none_or(|i| self.admission.known(i));
            // A server whose connection libmemcached closed on the refusal fails with an
            // I/O error (counted as the server failing): asked too, as it answers.
            let failure = failed.iter().find(|(q, _)| *q == p).map(|(_, e)| e);
            if known || failure.is_some_and(|e| !matches!(e, Error::Io { .. })) {
                continue;
            }
            if failure.is_some() {
                if let Some(key) = keys
                    .iter()
                    .zip(at)
                    .find(|(_, q)| **q == Some(p))
                    .map(|(k, _)| *k)
                {
                    self.confirm_miss(h, key, Some(p))?;
                }
                continue;
            }
            let mut of_p = keys
                .iter()
                .zip(at)
                .zip(
                    items
                        .iter()
                        .map(Option::is_some)
                        .chain(std::iter::repeat(false)),
                )
                .filter(|((_, q), _)| **q == Some(p));
            let Some(((first, _), first_found)) = of_p.next() else {
                continue;
            };
            if !first_found && !of_p.any(|(_, found)| found) {
                self.confirm_miss(h, first, Some(p))?;
            }
        }
        Ok(())
    }

    /// `e`, the failure of a multi-get on `h` of `keys` (each placed at the position in `at`)
    /// over the servers at `asked`; or, when `e` is libmemcached closing the connection (an
    /// I/O error, or a protocol error: the fetch stopped at the refusal), the refusal
    /// ([`Error::Auth`]) of the first of those servers that refuses a probe: a multi-get a server refused failed so, as the server failing (and beside a
    /// server that does not require SASL, as a protocol error naming both, a review).
    pub(crate) fn refusal_among(
        &self,
        h: &Handle,
        (keys, at): (&[&[u8]], &[Option<usize>]),
        asked: &[usize],
        e: Error,
    ) -> Error {
        if !matches!(e, Error::Io { .. } | Error::Protocol { .. }) {
            return e;
        }
        for &p in asked {
            let key = keys
                .iter()
                .zip(at)
                .find(|(_, q)| **q == Some(p))
                .map(|(k, _)| *k);
            // Asked whatever it answered lately: the failure is the sign (a server
            // restarted with `-S` failed multi-gets as I/O errors for a second, a review).
            if let Some(key) = key {
                if let Err(refused) = self.confirm_miss_on(h, key, Some(p), true) {
                    return refused;
                }
            }
        }
        e
    }

    /// The hint an authentication error gets: what to set, when no credentials are.
    pub(crate) fn auth_hint(&self) -> &'static str {
        if self.admission.needed {
            NO_CREDENTIALS
        } else {
            ""
        }
    }

    /// Server `index` refused a request for want of authentication: asked again before
    /// the next one (it was restarted with `-S`).
    pub(crate) fn refused_by(&self, index: usize) {
        if let Some(admitted) = self.admission.admitted.get(index) {
            admitted.store(0, Ordering::Relaxed);
        }
    }
}
