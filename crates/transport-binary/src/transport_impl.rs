//! [`Transport`] for [`BinaryTransport`]: every operation, from checking its input to
//! reporting each server's outcome to the failure record.

use libmemcached_sys::*;
use newcache_transport::{
    check_key, get_many_made_with, Error, Found, Item, MadeKeys, ManyDelete, ManyRead, ManyStore,
    Result, ServerStats, Store, StoreMode, StoreStatus, Transport,
};

use crate::batch::Batch;
use crate::pool::Handle;
use crate::BinaryTransport;

impl Transport for BinaryTransport {
    fn name(&self) -> &'static str {
        if self.binary {
            "libmemcached-binary"
        } else {
            "libmemcached-text"
        }
    }

    fn close(&self) {
        self.pool.close_idle();
    }

    fn get(&self, key: &[u8]) -> Result<Option<Item>> {
        check_key(key)?;
        if self.binary {
            return self.on_key(key, |h, position| self.get_one(h, key, position));
        }
        // `fetch` reports the server's outcome itself.
        let (h, position, _) = self.lease_for_key(key)?;
        let one = [position.unwrap_or(0)];
        let asked: &[usize] = if position.is_some() { &one } else { &[] };
        let items = self.fetch(&h, &[key], asked, &|| {}, &mut Vec::new())?;
        Ok(items.into_iter().next().flatten())
    }

    /// One multi-get for every server's keys: see `get_many_then` (get.rs) for how a
    /// server that fails is answered.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        self.get_many_then(keys, &|| {}).map(|read| read.items)
    }

    fn get_many_read(&self, keys: &[&[u8]]) -> Result<ManyRead> {
        self.get_many_then(keys, &|| {})
    }

    /// One multi-get of every key, as [`Transport::get_many`]; the keys' `sent` runs while
    /// the servers answer (between `memcached_mget` and the first fetch).
    fn get_many_made(&self, keys: &mut dyn MadeKeys, found: &mut Found<'_>) -> Result<()> {
        get_many_made_with(keys, found, |keys, sent| self.get_many_then(keys, sent))
    }

    fn store(&self, request: &Store<'_>) -> Result<StoreStatus> {
        check_key(request.key)?;
        self.check_exptime(request.exptime)?;
        if request.mode != StoreMode::Set && request.is_too_large(self.item_size_limit) {
            // Refused before anything is sent, to a server left alone as down too (a handle
            // leased only to place the key: no I/O).
            let position = self
                .lease()
                .ok()
                .and_then(|h| self.position_for_key(&h, request.key));
            return Err(self.over_limit(request, position));
        }
        self.on_key(request.key, |h, position| {
            self.store_checked(h, request, position)
        })
    }

    /// One request after another on one handle, every one of them sent, as
    /// [`Transport::store_many`] says and as the text transport does: a request refused as
    /// too large (by the limit or by the server) is refused by itself; a server that fails
    /// (or is left alone) gets no more of the batch, the other servers get all of theirs.
    /// The answer, once every request ran: the first failed server's error (in the order
    /// the servers first appear in the batch), else the first other error, else the first
    /// refusal, else one status per request.
    fn store_many(&self, requests: &[Store<'_>]) -> Result<Vec<StoreStatus>> {
        let (batch, statuses) = self.store_batch(requests)?;
        batch.answer(statuses)
    }

    /// [`Self::store_many`], the requests of a failed server told apart (those it did not
    /// answer: the one that failed, and the ones it was then not sent) when another server
    /// answered.
    fn store_many_each(&self, requests: &[Store<'_>]) -> Result<ManyStore> {
        let (batch, statuses) = self.store_batch(requests)?;
        batch.answer_each(statuses)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        self.on_key(key, |h, position| self.delete_on(h, key, position))
    }

    /// Every key's delete is sent, as in `store_many`: a server that fails gets no more of
    /// the batch, the others get all of theirs; then the first failed server's error, else
    /// the first other error, else one result per key.
    fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<bool>> {
        let (batch, deleted) = self.delete_batch(keys)?;
        batch.answer(deleted)
    }

    /// [`Self::delete_many`], the keys of a failed server told apart (the one that failed,
    /// and the ones it was then not sent) when another server answered.
    fn delete_many_each(&self, keys: &[&[u8]]) -> Result<ManyDelete> {
        let (batch, deleted) = self.delete_batch(keys)?;
        batch.answer_deletes(deleted)
    }

    fn incr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.incr_decr(key, delta, true)
    }

    fn decr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.incr_decr(key, delta, false)
    }

    fn touch(&self, key: &[u8], exptime: u32) -> Result<bool> {
        check_key(key)?;
        self.check_exptime(exptime)?;
        self.on_key(key, |h, position| {
            // SAFETY: h is a live handle used by this thread only; the key outlives the call.
            let rc = unsafe {
                memcached_touch(
                    h.as_ptr(),
                    key.as_ptr().cast(),
                    key.len(),
                    exptime as time_t,
                )
            };
            self.check_no_stray_item(h, key, position)
                .and_then(|()| match rc {
                    MEMCACHED_SUCCESS => Ok(true),
                    // A server that requires SASL is answered "auth error", which reads so.
                    MEMCACHED_NOTFOUND => self.confirm_miss(h, key, position).map(|()| false),
                    rc => Err(self.error(h, rc, self.label_at(position), "touch")),
                })
        })
    }

    fn flush_all(&self) -> Result<()> {
        let h = self.lease()?;
        // SAFETY: h is a live handle used by this thread only.
        let rc = unsafe { memcached_flush(h.as_ptr(), 0) };
        if memcached_failed(rc) {
            // The server that failed, when its connection shows it (libmemcached's own
            // error names every server: an outside audit).
            self.check_flush_answered(&h)?;
            return Err(self.error(&h, rc, self.label_for_failure(&h), "flush_all"));
        }
        if self.binary {
            self.check_flush_answered(&h)?;
        }
        self.check_leftovers(&h)
    }

    fn stats(&self) -> Result<Vec<ServerStats>> {
        self.stats_of_all()
    }
}

impl BinaryTransport {
    /// The requests of a `store_many`, one after another on one handle: each one's status,
    /// and the batch's failures and refusals.
    fn store_batch(&self, requests: &[Store<'_>]) -> Result<(Batch, Vec<StoreStatus>)> {
        for r in requests {
            check_key(r.key)?;
        }
        for r in requests {
            self.check_exptime(r.exptime)?;
        }
        let key_of = |i: usize| requests.get(i).map(|r| r.key);
        self.run_batch(
            requests.len(),
            key_of,
            StoreStatus::NotStored,
            |h, i, position| match requests.get(i) {
                Some(r) => self.store_checked(h, r, position),
                None => Ok(StoreStatus::NotStored),
            },
        )
    }

    /// The deletes of a `delete_many`, one after another on one handle: whether each key
    /// held an item, and the batch's failures.
    fn delete_batch(&self, keys: &[&[u8]]) -> Result<(Batch, Vec<bool>)> {
        for key in keys {
            check_key(key)?;
        }
        let key_of = |i: usize| keys.get(i).copied();
        self.run_batch(keys.len(), key_of, false, |h, i, position| {
            match keys.get(i) {
                Some(key) => self.delete_on(h, key, position),
                None => Ok(false),
            }
        })
    }

    /// `count` requests (`key_of` gives each one's key, `run` runs it with the key's position
    /// taken before the call) one after another on one handle, each server's outcome
    /// reported to the failure record: a server that failed (or is left alone) gets no more
    /// of them, a request refused as too large is refused by itself. Each request's answer
    /// (`unanswered` where it got none), and the batch's failures and refusals.
    fn run_batch<'k, T: Clone>(
        &self,
        count: usize,
        key_of: impl Fn(usize) -> Option<&'k [u8]>,
        unanswered: T,
        run: impl Fn(&Handle, usize, Option<usize>) -> Result<T>,
    ) -> Result<(Batch, Vec<T>)> {
        let mut batch = Batch::new(self.servers.len());
        if count == 0 {
            return Ok((batch, Vec::new()));
        }
        let h = self.lease()?;
        let mut answers = vec![unanswered; count];
        for (i, answer) in answers.iter_mut().enumerate() {
            let position = key_of(i).and_then(|key| self.position_for_key(&h, key));
            let server = position.and_then(|p| self.server_at(p));
            if !batch.may_send(self, server, i) {
                continue;
            }
            let ticket = server.map(|s| self.health.ticket(s));
            let outcome = run(&h, i, position);
            if let (Some(s), Some(ticket)) = (server, ticket) {
                self.health.report(s, ticket, &outcome);
            }
            match outcome {
                Ok(a) => *answer = a,
                Err(e @ Error::ValueTooLarge { .. }) => batch.refuse(i, e),
                Err(e) => batch.failed(server, i, e),
            }
        }
        Ok((batch, answers))
    }
}
