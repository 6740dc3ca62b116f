//! Reading items: the multi-get every `get_many` (and a text-mode `get`) runs, the binary
//! protocol's one-key get, and how a read that ended early is told apart.

use std::os::raw::c_char;

use libmemcached_sys::*;
use newcache_transport::{check_key, Error, Item, ManyRead, Result};

use crate::copy::{c_bytes, c_slice};
use crate::errors::out_of_memory;
use crate::pool::{Handle, ResultBuf};
use crate::BinaryTransport;

/// The most request bytes one multi-get round writes. libmemcached writes a whole
/// multi-get's requests before it reads a reply, and memcached stops reading requests
/// while the replies it has written wait to be read: requests past what the sockets'
/// buffers hold never finished going out, and the call hung, waiting on its poll timeout
/// again and again (an outside audit: a `get_many` of 70,000 keys over the binary
/// protocol never returned; over the text protocol, 100,000 timed out). A round this size
/// goes out whole with Linux's default buffers on both hosts (the server's receive window
/// alone is about 64 KB of its 128 KB buffer); a review found 64 KB rounds hang where the
/// server's host had 16 KB buffers and these where it had 8 KB (docs/cluster.md). The
/// text transport's rounds are this size too.
pub(crate) const ROUND_BYTES: usize = 32 * 1024;

/// What `key` costs a multi-get's request: the binary protocol's 24-byte header and the
/// key (more than the text protocol's space and key).
fn request_bytes(key: &[u8]) -> usize {
    key.len() + 24
}

/// The distinct keys of a multi-get, sorted (the order its request asks them in), and where
/// each key asked is among them: made by sorting the keys' positions, so that putting the
/// items back in the order asked compares no keys.
struct Distinct<'k> {
    /// Each key once, sorted.
    keys: Vec<&'k [u8]>,
    /// For each key asked, in the order asked, its place in `keys`.
    of: Vec<usize>,
    /// Whether some key was asked more than once.
    repeated: bool,
}

impl<'k> Distinct<'k> {
    fn of(asked: &[&'k [u8]]) -> Distinct<'k> {
        let mut order: Vec<(&[u8], usize)> = asked.iter().copied().zip(0..).collect();
        order.sort_unstable();
        let mut keys: Vec<&[u8]> = Vec::with_capacity(asked.len());
        let mut of = vec![0; asked.len()];
        for (key, i) in order {
            if keys.last() != Some(&key) {
                keys.push(key);
            }
            if let Some(slot) = of.get_mut(i) {
                *slot = keys.len().saturating_sub(1);
            }
        }
        let repeated = keys.len() != asked.len();
        Distinct { keys, of, repeated }
    }

    /// The items found for `keys` (each at its key's place there), in the order asked: a
    /// key asked twice gets the item twice.
    fn in_order(&self, mut found: Vec<Option<Item>>) -> Vec<Option<Item>> {
        if self.repeated {
            return self
                .of
                .iter()
                .map(|&at| found.get(at).cloned().flatten())
                .collect();
        }
        // Every key once: each item goes to its one place, not copied.
        self.of
            .iter()
            .map(|&at| found.get_mut(at).and_then(Option::take))
            .collect()
    }
}

/// Puts each of `found` (the items of a multi-get of some of a call's keys) at the place
/// in `out` that `at` gives for it.
fn place(out: &mut [Option<Item>], at: &[usize], found: Vec<Option<Item>>) {
    for (&i, item) in at.iter().zip(found) {
        if let Some(slot) = out.get_mut(i) {
            *slot = item;
        }
    }
}

/// Whether a multi-get found nothing.
pub(crate) fn none_found(items: &[Option<Item>]) -> bool {
    items.iter().all(Option::is_none)
}

impl BinaryTransport {
    /// [`Transport::get_many`](newcache_transport::Transport::get_many), with `sent` run
    /// once the request is written and before the replies are read.
    ///
    /// One multi-get for every server's keys (libmemcached writes every server's request
    /// before reading a reply). A server that is left alone, or fails during the call,
    /// leaves its keys as misses, as in the text transport; the call fails only when every
    /// server failed, or one failed otherwise than by being unreachable, hung or down.
    ///
    /// A multi-get whose requests pass [`ROUND_BYTES`] goes out in rounds of at most that
    /// much, one after another ([`get_many_in_rounds`](Self::get_many_in_rounds)).
    pub(crate) fn get_many_then(&self, keys: &[&[u8]], sent: &dyn Fn()) -> Result<ManyRead> {
        for key in keys {
            check_key(key)?;
        }
        if keys.is_empty() {
            return Ok(ManyRead::all(Vec::new()));
        }
        // One handle for the whole call: a pool with none free fails it once, as one
        // multi-get (leased per round, a busy pool read as every server failing, and every
        // later round was skipped: a review).
        let h = self.lease()?;
        if keys.iter().map(|k| request_bytes(k)).sum::<usize>() > ROUND_BYTES {
            return self.get_many_in_rounds(&h, keys, sent);
        }
        self.get_many_round(&h, keys, sent, &mut Vec::new())
    }

    /// [`get_many_then`](Self::get_many_then) in rounds of at most [`ROUND_BYTES`] of
    /// requests each on `h`, their answers put together in the order of `keys`; `sent` is
    /// told once the last round is out (or would be: its servers had all failed). A server
    /// that failed in a round, by `h`'s placement, is not asked again in the later ones:
    /// its keys there are unread with its own failure at once (asking it again cost one
    /// timeout a round: 1.02 s against 0.25 s for 3,537 keys with one server of two
    /// whose connects time out, a review). The call fails as one multi-get would: only
    /// when no server answered.
    fn get_many_in_rounds(&self, h: &Handle, keys: &[&[u8]], sent: &dyn Fn()) -> Result<ManyRead> {
        let mut items: Vec<Option<Item>> = Vec::with_capacity(keys.len());
        let mut unread: Vec<(usize, Error)> = Vec::new();
        // The servers (by position) that failed in this call, each with its own failure.
        let mut failed: Vec<(usize, Error)> = Vec::new();
        let mut first_failure: Option<Error> = None;
        let mut answered = false;
        let told = std::cell::Cell::new(false);
        let then_sent = || {
            told.set(true);
            sent();
        };
        let mut start = 0;
        while start < keys.len() {
            let (mut end, mut bytes) = (start, 0);
            while let Some(key) = keys.get(end) {
                if end > start && bytes + request_bytes(key) > ROUND_BYTES {
                    break;
                }
                bytes += request_bytes(key);
                end += 1;
            }
            let round = keys.get(start..end).unwrap_or_default();
            let last = end >= keys.len();
            h.begin();
            match self.get_many_round(
                h,
                round,
                if last { &then_sent } else { &|| {} },
                &mut failed,
            ) {
                Ok(read) => {
                    answered = true;
                    items.extend(read.items);
                    unread.extend(read.unread.into_iter().map(|(i, e)| (i + start, e)));
                }
                // Every server of the round failed (each of them in `failed`, unless it
                // failed before any was told apart): its keys are unread, each with its
                // own server's failure, and the other rounds go on.
                Err(e) if e.is_server_failure() => {
                    for (i, key) in round.iter().enumerate() {
                        let p = self.position_for_key(h, key);
                        let known = p.and_then(|p| failed.iter().find(|(q, _)| *q == p));
                        let own = match known {
                            Some((_, why)) => why.for_another_key(),
                            None => {
                                if let Some(p) = p {
                                    failed.push((p, e.for_another_key()));
                                }
                                e.for_another_key()
                            }
                        };
                        unread.push((start + i, own));
                    }
                    items.resize_with(end, || None);
                    first_failure.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
            start = end;
        }
        if !answered {
            if let Some(e) = first_failure {
                return Err(e);
            }
        }
        if !told.get() {
            sent();
        }
        Ok(ManyRead::with_unread(items, unread))
    }

    /// One round of [`get_many_then`](Self::get_many_then) on `h`: its keys checked
    /// already; `failed` holds the servers (positions) that failed earlier in the call,
    /// whose keys are not asked, and gets those that fail now.
    fn get_many_round(
        &self,
        h: &Handle,
        keys: &[&[u8]],
        sent: &dyn Fn(),
        failed: &mut Vec<(usize, Error)>,
    ) -> Result<ManyRead> {
        if keys.is_empty() {
            return Ok(ManyRead::all(Vec::new()));
        }
        let distinct = Distinct::of(keys);
        if self.position_to_server.len() == 1 {
            // One server, never left alone: no placement to look up.
            if let Some((_, e)) = failed.first() {
                return Err(e.for_another_key());
            }
            let items = self
                .fetch(h, &distinct.keys, &[0], sent, failed)
                .map_err(|e| {
                    self.refusal_among(
                        h,
                        (distinct.keys.get(..1).unwrap_or_default(), &[Some(0)]),
                        &[0],
                        e,
                    )
                })?;
            // A server that requires SASL is answered "auth error", which reads as misses.
            if let (true, Some(key)) = (none_found(&items), distinct.keys.first()) {
                self.confirm_miss(h, key, Some(0))?;
            }
            return Ok(ManyRead::all(distinct.in_order(items)));
        }
        let mut asked_keys: Vec<&[u8]> = Vec::with_capacity(distinct.keys.len());
        // The server position of each of `asked_keys`.
        let mut asked_at: Vec<Option<usize>> = Vec::with_capacity(distinct.keys.len());
        // Where each distinct key is in `asked_keys` (`None`: its server was left alone).
        let mut asked_as: Vec<Option<usize>> = Vec::with_capacity(distinct.keys.len());
        let mut asked: Vec<usize> = Vec::new();
        // Each distinct key's server position (in `distinct.keys`' order, which is
        // sorted); the servers left alone, with why, join `failed`.
        let mut placed: Vec<Option<usize>> = Vec::with_capacity(distinct.keys.len());
        for &key in &distinct.keys {
            let position = self.position_for_key(h, key);
            placed.push(position);
            asked_as.push(None);
            if let Some(p) = position {
                if failed.iter().any(|(q, _)| *q == p) {
                    continue;
                }
                if let Some(i) = self.server_at(p) {
                    if let Err(e) = self.gate(i) {
                        if !failed.iter().any(|(q, _)| *q == p) {
                            failed.push((p, e));
                        }
                        continue;
                    }
                }
                if !asked.contains(&p) {
                    asked.push(p);
                }
            }
            if let Some(slot) = asked_as.last_mut() {
                *slot = Some(asked_keys.len());
            }
            asked_keys.push(key);
            asked_at.push(position);
        }
        if asked_keys.is_empty() {
            if let Some((_, e)) = failed.first() {
                return Err(e.for_another_key());
            }
            return Ok(ManyRead::all(vec![None; keys.len()]));
        }
        let mut found = self
            .fetch_connecting_first(h, (&asked_keys, &asked_at), &asked, sent, failed)
            .map_err(|e| self.refusal_among(h, (&asked_keys, &asked_at), &asked, e))?;
        // A server that requires SASL is answered "auth error", which reads as misses.
        self.confirm_misses(h, (&asked_keys, &asked_at), &asked, failed, &found)?;
        let by_distinct = asked_as
            .iter()
            .map(|a| a.and_then(|a| found.get_mut(a)).and_then(Option::take))
            .collect();
        let items = distinct.in_order(by_distinct);
        if failed.is_empty() {
            return Ok(ManyRead::all(items));
        }
        // The keys of the servers that failed (left alone, or during the call): not read.
        let unread = distinct
            .of
            .iter()
            .enumerate()
            .filter_map(|(i, &at)| {
                let p = placed.get(at).copied().flatten()?;
                let (_, e) = failed.iter().find(|(q, _)| *q == p)?;
                Some((i, e.for_another_key()))
            })
            .collect();
        Ok(ManyRead::with_unread(items, unread))
    }

    /// [`fetch`](Self::fetch), with each server whose connection on `h` is not open yet
    /// asked for one of its keys first, on its own, and the rest asked only of the servers
    /// that answered. libmemcached's multi-get connects a server again for each of its keys
    /// when a connect fails (its failure counter moves once per request), so a server that
    /// cannot be reached (a host down, its connects timing out) cost one connect timeout per
    /// key: 35 keys on it took 8.8 s at a 250 ms connect timeout, where pylibmc's default
    /// (the server left alone after its first failed connect) took 250 ms (an outside
    /// audit). Open connections (every call after a handle's first) cost nothing more.
    /// `(keys, at)`: the keys (distinct, valid, sorted) and each one's server position.
    pub(crate) fn fetch_connecting_first(
        &self,
        h: &Handle,
        (keys, at): (&[&[u8]], &[Option<usize>]),
        asked: &[usize],
        then_sent: &dyn Fn(),
        failed_servers: &mut Vec<(usize, Error)>,
    ) -> Result<Vec<Option<Item>>> {
        if asked.len() < 2 {
            return self.fetch(h, keys, asked, then_sent, failed_servers);
        }
        let cold: Vec<usize> = asked
            .iter()
            .copied()
            .filter(|&p| self.fields_at(h, p).is_some_and(|f| f.fd < 0))
            .collect();
        if cold.is_empty() {
            return self.fetch(h, keys, asked, then_sent, failed_servers);
        }
        // One key of each cold server (in `keys`' order: still sorted), and where it is.
        let mut firsts: Vec<&[u8]> = Vec::with_capacity(cold.len());
        let mut firsts_at: Vec<usize> = Vec::with_capacity(cold.len());
        let mut seen: Vec<usize> = Vec::with_capacity(cold.len());
        for (i, (&key, &p)) in keys.iter().zip(at).enumerate() {
            if let Some(p) = p.filter(|p| cold.contains(p) && !seen.contains(p)) {
                seen.push(p);
                firsts.push(key);
                firsts_at.push(i);
            }
        }
        let mut out: Vec<Option<Item>> = vec![None; keys.len()];
        match self.fetch(h, &firsts, &cold, &|| {}, failed_servers) {
            Ok(found) => place(&mut out, &firsts_at, found),
            // Every cold server failed (each in `failed_servers`): the others are asked.
            Err(e) if e.is_server_failure() => {}
            Err(e) => return Err(e),
        }
        let down =
            |p: &Option<usize>| p.is_some_and(|p| failed_servers.iter().any(|(q, _)| *q == p));
        let (rest_at, rest): (Vec<usize>, Vec<&[u8]>) = keys
            .iter()
            .zip(at)
            .enumerate()
            .filter(|&(i, (_, p))| !down(p) && !firsts_at.contains(&i))
            .map(|(i, (&key, _))| (i, key))
            .unzip();
        let rest_asked: Vec<usize> = asked.iter().copied().filter(|&p| !down(&Some(p))).collect();
        if rest.is_empty() || rest_asked.is_empty() {
            then_sent();
            if let Some((_, e)) = failed_servers.first().filter(|_| rest_asked.is_empty()) {
                return Err(e.for_another_key());
            }
            return Ok(out);
        }
        let found = self.fetch(h, &rest, &rest_asked, then_sent, failed_servers)?;
        place(&mut out, &rest_at, found);
        Ok(out)
    }

    /// Runs a multi-get of `keys` (distinct, valid, **sorted**) on `h` and reads every item,
    /// each at its key's place in `keys`.
    /// `asked` are the positions of the servers that hold the keys (none of them left
    /// alone).
    ///
    /// As in the text transport, a server that fails during the call (a failed connect, a
    /// timeout, an I/O error, or libmemcached's own "left alone" answer) leaves its keys as
    /// misses, and the others' items are returned; the call fails when every server asked
    /// failed (with the first one's error) or when a server failed otherwise. Each server's
    /// outcome goes to the failure record. An item for a key not asked for, or one returned
    /// twice, closes every connection and fails the call ([`Error::Protocol`]).
    pub(crate) fn fetch(
        &self,
        h: &Handle,
        keys: &[&[u8]],
        asked: &[usize],
        then_sent: &dyn Fn(),
        failed_servers: &mut Vec<(usize, Error)>,
    ) -> Result<Vec<Option<Item>>> {
        let mut items: Vec<Option<Item>> = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(items);
        }
        h.begin();
        // What each asked server's record was before the request went out.
        let tickets: Vec<_> = asked
            .iter()
            .map(|&p| self.server_at(p).map(|i| self.health.ticket(i)))
            .collect();
        // Made before the request is sent, so no failure can leave the replies unread.
        let mut result = ResultBuf::new(h).ok_or_else(|| out_of_memory("a result"))?;
        let pointers: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr().cast()).collect();
        let lengths: Vec<usize> = keys.iter().map(|k| k.len()).collect();
        // SAFETY: h is a live handle used by this thread only; both arrays hold keys.len()
        // entries pointing into key buffers that outlive the call.
        let sent =
            unsafe { memcached_mget(h.as_ptr(), pointers.as_ptr(), lengths.as_ptr(), keys.len()) };
        if !memcached_failed(sent) {
            // Written; the replies are read next: the caller's work overlaps the servers'.
            then_sent();
        }

        let mut rc = MEMCACHED_SUCCESS;
        let mut stray = None;
        let mut next = 0;
        // Read to the end even after an error, so the handle is left between requests.
        loop {
            // SAFETY: h is live; result is caller-owned storage initialized for h, which
            // fetch_result fills and, at the end, only resets (never frees).
            let r = unsafe { memcached_fetch_result(h.as_ptr(), result.as_ptr(), &mut rc) };
            if r.is_null() {
                break;
            }
            // SAFETY: r is the live result just filled; its key and value buffers are valid
            // for the lengths reported and are read (the value copied) before the next
            // fetch.
            let (asked_for, item) = unsafe {
                let key = c_slice(
                    memcached_result_key_value(r),
                    memcached_result_key_length(r),
                );
                // A server answers in the order it was asked: try the key after the last
                // one found before searching them all.
                let asked_for = if keys.get(next) == Some(&key) {
                    Ok(next)
                } else {
                    keys.binary_search(&key).map_err(|_| key.to_vec())
                };
                let cas = memcached_result_cas(r);
                let item = Item {
                    value: c_bytes(memcached_result_value(r), memcached_result_length(r)),
                    flags: memcached_result_flags(r),
                    cas: (cas != 0).then_some(cas),
                };
                (asked_for, item)
            };
            let found = match asked_for {
                Ok(found) => found,
                Err(key) => {
                    // The stream is out of step: nothing after this is to be trusted.
                    stray = Some(key);
                    break;
                }
            };
            next = found + 1;
            match items.get_mut(found) {
                Some(slot) if slot.is_none() => *slot = Some(item),
                _ => {
                    stray = Some(keys.get(found).map_or_else(Vec::new, |k| k.to_vec()));
                    break;
                }
            }
        }
        drop(result);
        if let Some(key) = stray {
            self.reset(h);
            return Err(Error::Protocol {
                server: self.all_servers(),
                detail: format!(
                    "a multi-get of {} keys returned key {:?}, which it did not ask for (or twice): a duplicated or stray reply; the connections were closed",
                    keys.len(),
                    String::from_utf8_lossy(&key)
                ),
            });
        }

        // Which servers failed: libmemcached closes a connection that failed (or never
        // opens it), and a poll timeout over several servers ends the fetch with replies
        // still owed.
        let states: Option<Vec<(usize, InstanceFields)>> = asked
            .iter()
            .map(|&p| self.fields_at(h, p).map(|f| (p, f)))
            .collect();
        let Some(states) = states else {
            return self.fetch_ended_untolerant(h, items, sent, rc);
        };
        let owed = states.iter().any(|(_, f)| f.response_count > 0);
        if owed && !self.waited_out_the_poll(h) {
            // Not a timeout: libmemcached's fetch stops at a reply that is neither an item
            // nor an end, with the other servers' replies unread.
            self.reset(h);
            return Err(self.cut_short(rc));
        }
        let mut failed: Vec<(usize, Error)> = Vec::new();
        for &(p, f) in &states {
            if f.response_count > 0 {
                let server = self
                    .server_at(p)
                    .map_or_else(|| self.all_servers(), |i| self.label(i));
                failed.push((
                    p,
                    Error::Timeout {
                        server,
                        after: self.poll_of(h),
                    },
                ));
            } else if f.fd < 0 {
                failed.push((p, self.instance_failure(h, p, "get")));
            }
        }
        // An error of the call itself, when no server explains it (read before any reset,
        // which clears the handle's errors).
        let own_error = if !failed.is_empty() {
            None
        } else if memcached_failed(sent) {
            Some(self.error(h, sent, self.label_for_failure(h), "get"))
        } else if !matches!(rc, MEMCACHED_END | MEMCACHED_NOTFOUND | MEMCACHED_SUCCESS) {
            Some(self.error(h, rc, self.label_for_failure(h), "get"))
        } else if let Some(last) = swallowed_error(h, rc, none_found(&items)) {
            // Not a miss: the connection saw a reply it did not expect, and is closed.
            let e = self.error(h, last, self.label_for_failure(h), "get");
            self.reset(h);
            Some(e)
        } else {
            None
        };
        if owed {
            // Half-read replies are dropped with their connections.
            self.reset(h);
        } else {
            self.check_leftovers(h)?;
        }
        for (&(p, _), ticket) in states.iter().zip(&tickets) {
            if let (Some(index), Some(ticket)) = (self.server_at(p), *ticket) {
                match failed.iter().find(|(q, _)| *q == p) {
                    Some((_, e)) => self.health.failed_with(index, ticket, e),
                    None => self.health.succeeded(index),
                }
            }
        }
        if let Some(e) = own_error {
            return Err(e);
        }
        let every_server_failed = failed.len() == states.len();
        let mut first = None;
        for (p, e) in failed {
            if !e.is_server_failure() {
                return Err(e);
            }
            if first.is_none() {
                first = Some(e.for_another_key());
            }
            failed_servers.push((p, e));
        }
        match first {
            Some(e) if every_server_failed => Err(e),
            _ => Ok(items),
        }
    }

    /// The end of a multi-get when libmemcached's private layout cannot be read (another
    /// libmemcached than 1.1.x): which server failed is not known, so any failure fails the
    /// call.
    fn fetch_ended_untolerant(
        &self,
        h: &Handle,
        items: Vec<Option<Item>>,
        sent: memcached_return_t,
        rc: memcached_return_t,
    ) -> Result<Vec<Option<Item>>> {
        self.check_nothing_owed(h, rc)?;
        if memcached_failed(sent) {
            return Err(self.error(h, sent, self.label_for_failure(h), "get"));
        }
        if !matches!(rc, MEMCACHED_END | MEMCACHED_NOTFOUND | MEMCACHED_SUCCESS) {
            return Err(self.error(h, rc, self.label_for_failure(h), "get"));
        }
        // libmemcached skips servers it cannot connect to when sending a multi-get, and
        // turns a read error before the first item into "not found"; both leave the
        // error on the handle (cleared at the start of every request).
        // SAFETY: h is a live handle used by this thread only.
        let last = unsafe { memcached_last_error(h.as_ptr()) };
        if memcached_failed(last) {
            return Err(self.error(h, last, self.label_for_failure(h), "get"));
        }
        Ok(items)
    }

    /// One key in the binary protocol through `memcached_get`: one non-quiet `GETK` in one
    /// write. A one-key `memcached_mget` sends a quiet `GETKQ` and then a `NOOP` in two
    /// writes, and waits for both answers (measured: 20% fewer gets per second). The item's
    /// key and CAS unique, which `memcached_get` does not return, are read from the handle's
    /// own result, where the fetch left them; an item of another key is
    /// [`Error::Protocol`], and the connections are closed. `position`: where the key was
    /// placed on `h` before the call (it names the server in errors).
    pub(crate) fn get_one(
        &self,
        h: &Handle,
        key: &[u8],
        position: Option<usize>,
    ) -> Result<Option<Item>> {
        // Whether this get opens its connection: a miss on a new one is checked.
        let fresh = self.opens_a_connection(h, position);
        h.begin();
        let (mut len, mut flags, mut rc) = (0usize, 0u32, MEMCACHED_SUCCESS);
        // SAFETY: h is a live handle used by this thread only; the key outlives the call and
        // the out pointers are valid locals.
        let value = unsafe {
            memcached_get(
                h.as_ptr(),
                key.as_ptr().cast(),
                key.len(),
                &mut len,
                &mut flags,
                &mut rc,
            )
        };
        // SAFETY: h is live; its own result was just filled by the fetch (on a hit) and is
        // read before the handle's next call; its key buffer holds the length reported.
        let (cas, other_key) = unsafe {
            let r = memcached_st_result(h.as_ptr());
            let (k, kl) = (
                memcached_result_key_value(r),
                memcached_result_key_length(r),
            );
            let same = !k.is_null() && std::slice::from_raw_parts(k.cast::<u8>(), kl) == key;
            (memcached_result_cas(r), (!same).then(|| c_bytes(k, kl)))
        };
        let cas = (cas != 0).then_some(cas);
        let hit = if !value.is_null() {
            // SAFETY: memcached_get returned a malloc'd buffer of `len` bytes that the caller
            // owns; it is copied, then freed once.
            let bytes = unsafe { c_bytes(value, len) };
            // SAFETY: as above; not used after this.
            unsafe { free(value.cast()) };
            Some(bytes)
        } else if matches!(rc, MEMCACHED_NOTFOUND | MEMCACHED_END) || memcached_failed(rc) {
            None
        } else {
            // A hit of an empty value: NULL, with success.
            Some(Vec::new())
        };
        if let Some(bytes) = hit {
            if let Some(other) = other_key {
                self.reset(h);
                return Err(self.wrong_reply(position, key, &other));
            }
            self.check_leftovers(h)?;
            return Ok(Some(Item {
                value: bytes,
                flags,
                cas,
            }));
        }
        // As in `fetch`: a poll timeout can end the read looking like a miss.
        self.check_nothing_owed(h, rc)?;
        match rc {
            MEMCACHED_NOTFOUND | MEMCACHED_END => {
                // A read error before the item also reads as "not found"; it stays on the
                // handle (cleared at the start of every request).
                // SAFETY: h is a live handle used by this thread only.
                let last = unsafe { memcached_last_error(h.as_ptr()) };
                if memcached_failed(last) && !matches!(last, MEMCACHED_NOTFOUND | MEMCACHED_END) {
                    return Err(self.error(h, last, self.label_at(position), "get"));
                }
                self.check_leftovers(h)?;
                // A server that requires SASL is answered "auth error", which reads so.
                self.confirm_miss_on(h, key, position, fresh)?;
                Ok(None)
            }
            rc => Err(self.error(h, rc, self.label_at(position), "get")),
        }
    }

    /// After a read: libmemcached ends a fetch when poll() times out and reports it as the
    /// end of the items (with two or more servers, or a one-key get), so replies still owed
    /// mean a timeout. Then the handle's connections are closed, dropping the half-read
    /// replies, and the timeout is the error.
    ///
    /// libmemcached's fetch also stops, replies still owed, at a reply that is neither an
    /// item nor an end (a stray one); that is told from a timeout by the time the call took.
    fn check_nothing_owed(&self, h: &Handle, rc: memcached_return_t) -> Result<()> {
        let Some(server) = self.pending_server(h) else {
            return Ok(());
        };
        self.reset(h);
        if !self.waited_out_the_poll(h) {
            return Err(self.cut_short(rc));
        }
        Err(Error::Timeout {
            server,
            after: self.poll_of(h),
        })
    }

    /// Whether the request on `h` has lasted its whole poll timeout, as one that ended on
    /// a poll timeout has.
    fn waited_out_the_poll(&self, h: &Handle) -> bool {
        h.elapsed() >= self.poll_of(h)
    }

    /// A fetch that stopped early at a reply out of place; `rc` is what it ended with.
    fn cut_short(&self, rc: memcached_return_t) -> Error {
        let name = RETURN_VALUES
            .iter()
            .find(|(_, v)| *v == rc)
            .map_or("an unknown code", |(n, _)| n);
        Error::Protocol {
            server: self.all_servers(),
            detail: format!(
                "a get stopped at a reply that was neither an item nor its end (libmemcached: {name}) with other replies still owed: an error reply, or a duplicated or stray one; the connections were closed"
            ),
        }
    }

    /// The first server of `h` that still owes replies.
    fn pending_server(&self, h: &Handle) -> Option<String> {
        // SAFETY: h is a live handle used by this thread only.
        let count = unsafe { memcached_server_count(h.as_ptr()) };
        (0..count).find_map(|i| {
            // SAFETY: i is below the server count, so the instance is a live one of h.
            unsafe {
                let server = memcached_server_instance_by_position(h.as_ptr(), i);
                if !server.is_null() && memcached_server_response_count(server) > 0 {
                    self.label_of(server)
                } else {
                    None
                }
            }
        })
    }
}

/// The error line libmemcached's text protocol reports as a miss. A fetch that met
/// `CLIENT_ERROR ...` before any item ends with `MEMCACHED_NOTFOUND`, as a miss does; the
/// error itself is only in the handle's last error (which `memcached_mget` cleared). `None`
/// for a real miss. (A `SERVER_ERROR <message>`, twemproxy's for a server it cannot reach,
/// already ends the fetch with its own code; libmemcached keeps no error for
/// `SERVER_ERROR out of memory` and a bare `ERROR`: those still read as misses.)
fn swallowed_error(
    h: &Handle,
    rc: memcached_return_t,
    none_found: bool,
) -> Option<memcached_return_t> {
    if rc != MEMCACHED_NOTFOUND || !none_found {
        return None;
    }
    // SAFETY: h is a live handle used by this thread only.
    let last = unsafe { memcached_last_error(h.as_ptr()) };
    (!matches!(last, MEMCACHED_SUCCESS | MEMCACHED_NOTFOUND | MEMCACHED_END)).then_some(last)
}
