//! A reply never reaches the wrong request.
//!
//! libmemcached takes whatever bytes come next on a connection as the reply to the request it
//! just sent: it never compares an item's key with the key asked for, never checks the binary
//! protocol's opaque, and reads bytes left over from an earlier request (a duplicated reply, a
//! reply that came after its request gave up) as the next request's reply. So the transport
//! checks what it can around each call:
//!
//! - before a pooled handle is used, any connection that owes no reply but has bytes waiting
//!   (in libmemcached's buffer or in the socket, seen with a non-blocking `poll`) or was
//!   closed by the server is dropped (`memcached_quit`), so the request starts on a fresh one;
//! - every item returned is checked against the key asked for (`get`, `get_many`, `gets`),
//!   and a multi-get must not return a key twice;
//! - after a request that returns no item (store, delete, touch, incr/decr), the handle's own
//!   result must hold no item: libmemcached reads a stray `GET` reply into it;
//! - after any request, bytes buffered on a connection that owes no reply mean the reply just
//!   read may not have been the request's own.
//!
//! A failed check closes every connection of the handle and is [`Error::Protocol`]. What
//! libmemcached still cannot detect is in the crate documentation.

use std::time::Duration;

use libmemcached_sys::*;
use newcache_transport::{Error, Result};

use crate::copy::c_bytes;
use crate::pool::{Handle, Lease};
use crate::BinaryTransport;

/// The most connections `drop_stale_connections` polls without allocating.
const STACK_POLL: usize = 16;

impl BinaryTransport {
    /// The server at position `p` of `h`'s list, or NULL.
    pub(crate) fn instance_at(&self, h: &Handle, p: usize) -> *const memcached_instance_st {
        let Ok(p) = u32::try_from(p) else {
            return std::ptr::null();
        };
        // SAFETY: h is a live handle used by this thread only; a position past the count
        // gives NULL.
        unsafe { memcached_server_instance_by_position(h.as_ptr(), p) }
    }

    /// The position in `h`'s list of the server `key` goes to (no I/O), or `None` when
    /// libmemcached places it nowhere (no server left): where the next request for `key`
    /// on `h` goes. Taken before a call, it names the server in the call's errors
    /// ([`label_at`](Self::label_at)).
    ///
    /// With `remove_failed`, libmemcached puts an ejected server that is due back on the
    /// ring at the start of a request, not in `memcached_server_by_key`; that is done here
    /// first, so the position is the one the request will use (else, at that moment, a
    /// failure of the returning server was named after the live one its keys had moved to).
    pub(crate) fn position_for_key(&self, h: &Handle, key: &[u8]) -> Option<usize> {
        if self.position_to_server.len() == 1 {
            // One server holds every key.
            return Some(0);
        }
        // SAFETY: h is a live handle used by this thread only; memcached_autoeject reads its
        // servers' retry times and rebuilds its ring when one is due, with no I/O.
        unsafe { memcached_autoeject(h.as_ptr()) };
        let mut rc = MEMCACHED_SUCCESS;
        // SAFETY: h is a live handle used by this thread only; the key outlives the call and
        // rc is a valid out pointer. No I/O is done.
        let server =
            unsafe { memcached_server_by_key(h.as_ptr(), key.as_ptr().cast(), key.len(), &mut rc) };
        if server.is_null() {
            return None;
        }
        (0..self.position_to_server.len()).find(|&p| self.instance_at(h, p) == server)
    }

    /// The configured index of the server at position `p`.
    pub(crate) fn server_at(&self, p: usize) -> Option<usize> {
        self.position_to_server.get(p).copied()
    }

    /// The configured label of server `index`.
    pub(crate) fn label(&self, index: usize) -> String {
        self.servers
            .get(index)
            .map_or_else(|| self.all_servers(), |s| s.label.clone())
    }

    /// [`Error::ServerDown`] when server `index` is left alone after failing.
    pub(crate) fn gate(&self, index: usize) -> Result<()> {
        self.health
            .check(index)
            .map_err(|retry_in| Error::ServerDown {
                server: self.label(index),
                retry_in,
            })
    }

    /// A handle for a request on `key`, with the key's position on it and its server,
    /// once that server may be sent to ([`gate`](Self::gate)).
    pub(crate) fn lease_for_key(
        &self,
        key: &[u8],
    ) -> Result<(Lease<'_>, Option<usize>, Option<usize>)> {
        let h = self.lease()?;
        let position = self.position_for_key(&h, key);
        let server = position.and_then(|p| self.server_at(p));
        if let Some(i) = server {
            self.gate(i)?;
        }
        Ok((h, position, server))
    }

    /// A request on one key: `op` runs on a handle leased for it ([`lease_for_key`], with
    /// the key's position), and its outcome is reported to the server's health.
    ///
    /// [`lease_for_key`]: Self::lease_for_key
    pub(crate) fn on_key<R>(
        &self,
        key: &[u8],
        op: impl FnOnce(&Handle, Option<usize>) -> Result<R>,
    ) -> Result<R> {
        let (h, position, server) = self.lease_for_key(key)?;
        let ticket = server.map(|i| self.health.ticket(i));
        let outcome = op(&h, position);
        if let (Some(i), Some(ticket)) = (server, ticket) {
            self.health.report(i, ticket, &outcome);
            if matches!(outcome, Err(Error::Auth { .. })) {
                self.refused_by(i);
            }
        }
        outcome
    }

    /// The fields of the server at position `p` of `h`, when libmemcached's private layout
    /// can be read.
    pub(crate) fn fields_at(&self, h: &Handle, p: usize) -> Option<InstanceFields> {
        // SAFETY: h is a live handle used by this thread only, and the instance is NULL or
        // one of its servers.
        unsafe { memcached_instance_fields(h.as_ptr(), self.instance_at(h, p)) }
    }

    /// Closes every connection of a freshly leased handle that owes no reply and yet has
    /// bytes waiting (buffered, or readable on the socket: a late or duplicated reply) or
    /// was closed by the server, so no request reads them as its reply. One non-blocking
    /// `poll` of the handle's connected sockets.
    pub(crate) fn drop_stale_connections(&self, h: &Handle) {
        let count = self.position_to_server.len();
        let mut stack = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; STACK_POLL];
        let mut heap = Vec::new();
        let fds: &mut [libc::pollfd] = if count <= STACK_POLL {
            &mut stack
        } else {
            heap.resize(
                count,
                libc::pollfd {
                    fd: -1,
                    events: 0,
                    revents: 0,
                },
            );
            &mut heap
        };
        let mut polled = 0;
        for p in 0..count {
            let Some(fields) = self.fields_at(h, p) else {
                continue;
            };
            if fields.fd < 0 || fields.response_count > 0 {
                continue;
            }
            if fields.read_buffer_length > 0 {
                return self.reset(h);
            }
            if let Some(slot) = fds.get_mut(polled) {
                *slot = libc::pollfd {
                    fd: fields.fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                polled += 1;
            }
        }
        let Some(fds) = fds.get_mut(..polled) else {
            return;
        };
        if fds.is_empty() {
            return;
        }
        // SAFETY: fds holds `polled` initialized pollfd entries of sockets this handle owns;
        // a zero timeout never blocks.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
        if ready > 0 && fds.iter().any(|f| f.revents != 0) {
            self.reset(h);
        }
    }

    /// Closes every connection of `h`; the next request opens new ones.
    pub(crate) fn reset(&self, h: &Handle) {
        // SAFETY: h is a live handle used by this thread only.
        unsafe { memcached_quit(h.as_ptr()) };
    }

    /// After a request: bytes buffered on a connection that owes no reply came from no
    /// request, and the reply just read may have been one of them. The connections are
    /// closed and the request fails.
    pub(crate) fn check_leftovers(&self, h: &Handle) -> Result<()> {
        for p in 0..self.position_to_server.len() {
            let Some(fields) = self.fields_at(h, p) else {
                continue;
            };
            if fields.fd >= 0 && fields.response_count == 0 && fields.read_buffer_length > 0 {
                self.reset(h);
                return Err(Error::Protocol {
                    server: self.server_at(p).map_or_else(|| self.all_servers(), |i| self.label(i)),
                    detail: format!(
                        "{} bytes came after the reply, answering no request (a duplicated or stray reply), so the reply read may not have been this request's; the connections were closed",
                        fields.read_buffer_length
                    ),
                });
            }
        }
        Ok(())
    }

    /// After a binary `flush_all` that libmemcached called a success: it sends every server
    /// its flush, then reads their answers and ignores how that went, so a server that never
    /// answered (hung past the poll timeout) passed for flushed. Such a server's connection
    /// was closed by the failed read, or still awaits its answer: either is that server's
    /// failure. (Without libmemcached 1.1's instance layout this cannot be seen.)
    pub(crate) fn check_flush_answered(&self, h: &Handle) -> Result<()> {
        for p in 0..self.position_to_server.len() {
            let Some(fields) = self.fields_at(h, p) else {
                continue;
            };
            if fields.fd < 0 || fields.response_count > 0 {
                let failure = self.instance_failure(h, p, "flush_all");
                self.reset(h);
                return Err(failure);
            }
        }
        Ok(())
    }

    /// After a request that returns no item: libmemcached reads a stray item reply into the
    /// handle's own result and takes it for the request's answer. The connections are
    /// closed and the request fails; then the leftover check. `position`: where the key was
    /// placed before the call.
    pub(crate) fn check_no_stray_item(
        &self,
        h: &Handle,
        key: &[u8],
        position: Option<usize>,
    ) -> Result<()> {
        // SAFETY: h is live; its own result was reset by the request and is read before the
        // handle's next call; the key buffer holds the length reported.
        let stray = unsafe {
            let r = memcached_st_result(h.as_ptr());
            let len = memcached_result_key_length(r);
            (len != 0).then(|| c_bytes(memcached_result_key_value(r), len))
        };
        if let Some(stray) = stray {
            self.reset(h);
            return Err(self.wrong_reply(position, key, &stray));
        }
        self.check_leftovers(h)
    }

    /// The error for a reply to a request for `key` (placed at `position` before the call)
    /// that carried `got` instead.
    pub(crate) fn wrong_reply(&self, position: Option<usize>, key: &[u8], got: &[u8]) -> Error {
        Error::Protocol {
            server: self.label_at(position),
            detail: format!(
                "the reply to a request for key {:?} carried key {:?}: a duplicated or stray reply; the connections were closed",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(got)
            ),
        }
    }

    /// How long until libmemcached tries the server labelled `server` again, from its retry
    /// time; `fallback` when that cannot be read.
    pub(crate) fn retry_in_of(&self, h: &Handle, server: &str, fallback: Duration) -> Duration {
        let next_retry = (0..self.position_to_server.len())
            .find(|&p| self.server_at(p).is_some_and(|i| self.label(i) == server))
            .and_then(|p| self.fields_at(h, p))
            .map(|f| f.next_retry)
            .filter(|&t| t > 1);
        let Some(next_retry) = next_retry else {
            return fallback;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // libmemcached tries again once the current second is past next_retry.
        let at = u64::try_from(next_retry).unwrap_or(0).saturating_add(1);
        Duration::from_secs(at.saturating_sub(now))
    }
}
