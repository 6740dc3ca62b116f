//! The [`Transport`] operations of the blocking transport, over the exchanges and batches
//! of the other modules.

use newcache_transport::{
    check_key, get_many_made_with, Error, Found, Item, MadeKeys, ManyDelete, ManyRead, ManyStore,
    MetaItem, Result, ServerStats, Store, StoreMode, StoreStatus, Transport,
};

use std::sync::atomic::Ordering;

use crate::batch::{flushed, server_stats, Answer, Batch, RoundLimit};
use crate::command::{Cmd, Outcome};
use crate::errors::{
    learn_item_size_max, over_server_limit, refused_as_too_large, status_to_error, LimitCheck,
};
use crate::proto::{Expect, Status};
use crate::{Protocol, TextTransport};

impl TextTransport {
    /// [`Error::ValueTooLarge`] when memcached at `-I item_size_limit` would refuse the
    /// value ([`Store::value_limit`]: the limit less the key and the item header), naming
    /// the key's server's own limit when that is lower ([`TextTransport::over_limit`]).
    pub(crate) fn check_value(&self, request: &Store<'_>) -> Result<()> {
        if request.is_too_large(self.config.item_size_limit) {
            return Err(self.over_limit(request));
        }
        Ok(())
    }

    /// [`over_limit`](crate::errors::over_limit) with the key's server's limit.
    fn over_limit(&self, request: &Store<'_>) -> Error {
        let server = self.server_for_key(request.key).ok();
        let server = server.and_then(|index| self.server(index).ok());
        let limit = server.map(|s| &s.item_size_max);
        crate::errors::over_limit(request, limit, self.config.item_size_limit)
    }

    /// The stores of [`Transport::store_many`], pipelined per server: every request's
    /// status, the requests of the servers that failed while others answered, and the
    /// requests refused as too large (by the limit or by the server).
    fn store_batch(&self, requests: &[Store<'_>]) -> Result<(ManyStore, Vec<(usize, Error)>)> {
        for r in requests {
            check_key(r.key)?;
            newcache_transport::check_exptime(r.exptime)?;
        }
        let mut refused: Vec<(usize, Error)> = Vec::new();
        let mut refuse = |i: usize, e: Error| refused.push((i, e));
        let mut over = vec![false; requests.len()];
        for ((i, r), over) in requests.iter().enumerate().zip(over.iter_mut()) {
            if let Err(e) = self.check_value(r) {
                *over = true;
                refuse(i, e);
            } else if let Some(e) = self.server_refusal(r) {
                // Not a `set`: nothing goes in its place.
                *over = true;
                refuse(i, e);
            }
        }
        let is_over = |i: usize| over.get(i).copied().unwrap_or(false);
        let cmd_of = |i: usize| Cmd::for_store(requests.get(i)?, is_over(i));
        let groups = self.by_server(requests.len(), |i| cmd_of(i).map(|c| c.key()))?;
        let outcomes = self.pipelined(&groups, Batch::Each(&cmd_of), RoundLimit::STATUS);
        let (answered, failed) = Self::tolerant(outcomes, |index| members_of(&groups, index))?;
        let mut out = vec![StoreStatus::NotStored; requests.len()];
        for (index, answers) in answered {
            for answer in answers {
                match answer {
                    Answer::Key(i, Outcome::Stored(status)) => {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = status;
                        }
                    }
                    // The delete of a `set` over the limit.
                    Answer::Key(_, Outcome::Deleted(_)) => {}
                    Answer::Refused(Some(i), command, Status::ServerError(m))
                        if refused_as_too_large(&m) =>
                    {
                        match requests.get(i) {
                            Some(r) if !is_over(i) => refuse(i, self.refused_by(index, r)),
                            _ => {
                                return Err(status_to_error(
                                    self.label(index),
                                    Status::ServerError(m),
                                    command,
                                ))
                            }
                        }
                    }
                    other => return Err(self.answer_error(index, other)),
                }
            }
        }
        Ok((ManyStore::with_failed(out, failed), refused))
    }

    /// [`Transport::get_many`], with `sent` run once a one-server request is written and
    /// before its replies are read (a multi-server one does not run it).
    pub(crate) fn get_many_then(&self, keys: &[&[u8]], sent: &dyn Fn()) -> Result<ManyRead> {
        if self.one_request(keys) {
            return self.get_many_on_one_server(keys, sent).map(ManyRead::all);
        }
        let groups = self.keys_by_server(keys)?;
        let mut out = vec![None; keys.len()];
        let outcomes = self.pipelined(&groups, Batch::Gets(keys), RoundLimit::VALUES);
        let (answered, unread) = Self::tolerant(outcomes, |index| members_of(&groups, index))?;
        for (index, answers) in answered {
            for answer in answers {
                match answer {
                    Answer::Key(i, Outcome::Item(item)) => {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = item;
                        }
                    }
                    other => return Err(self.answer_error(index, other)),
                }
            }
        }
        Ok(ManyRead::with_unread(out, unread))
    }
}

/// The positions of the keys grouped on server `index`.
pub(crate) fn members_of(groups: &[(usize, Vec<usize>)], index: usize) -> &[usize] {
    groups
        .iter()
        .find(|(i, _)| *i == index)
        .map_or(&[][..], |(_, members)| members.as_slice())
}

impl Transport for TextTransport {
    fn name(&self) -> &'static str {
        "text"
    }

    fn close(&self) {
        for server in self.servers.iter() {
            server.pool.close_idle();
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Item>> {
        check_key(key)?;
        match self.run(Cmd::Get(key))? {
            Outcome::Item(item) => Ok(item),
            other => Err(self.outcome_error(key, other)),
        }
    }

    /// A server that failed while the others answered leaves its keys as misses, as
    /// libmemcached's multi-get does ([`Transport::get_many_read`] tells them apart).
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        self.get_many_then(keys, &|| {}).map(|read| read.items)
    }

    fn get_many_read(&self, keys: &[&[u8]]) -> Result<ManyRead> {
        self.get_many_then(keys, &|| {})
    }

    /// Every key made, then the multi-get of them sent whole, with `sent` told between
    /// writing the request and reading the replies (see the `multi_get` module for why not
    /// in parts, and why as a list of the made keys).
    fn get_many_made(&self, keys: &mut dyn MadeKeys, found: &mut Found<'_>) -> Result<()> {
        get_many_made_with(keys, found, |keys, sent| self.get_many_then(keys, sent))
    }

    /// A value memcached at `-I item_size_limit` would refuse ([`Store::value_limit`]) is
    /// refused before it is sent; for a `set`, one
    /// `delete` of the key goes instead (memcached unlinks the old item when it refuses a
    /// `set` as too large; so does this transport, so the old value is not served on).
    ///
    /// A value the server refuses as too large (its `-I` is below `item_size_limit`) is
    /// [`Error::ValueTooLarge`] too. In the meta protocol memcached 1.6 then unlinks the old
    /// item whatever the mode (`add`, `replace`... too), where the classic commands unlink
    /// it only for `set`; so a request that is not a `set` and might be too large for some
    /// server ([`Store::needs_server_limit`]) is first held to its server's own `-I`
    /// (asked once a minute at most), and refused here with nothing sent when over it.
    fn store(&self, request: &Store<'_>) -> Result<StoreStatus> {
        check_key(request.key)?;
        newcache_transport::check_exptime(request.exptime)?;
        if request.is_too_large(self.config.item_size_limit) {
            if request.mode == StoreMode::Set {
                self.delete(request.key)?;
            }
            return Err(self.over_limit(request));
        }
        if let Some(too_large) = self.server_refusal(request) {
            return Err(too_large);
        }
        match self.run(Cmd::Store(request)) {
            Ok(Outcome::Stored(status)) => Ok(status),
            Ok(other) => Err(self.outcome_error(request.key, other)),
            // Refused by the server (its -I is below item_size_limit): named with its limit.
            Err(Error::ValueTooLarge { .. }) => {
                Err(self.refused_by(self.server_for_key(request.key)?, request))
            }
            Err(e) => Err(e),
        }
    }

    /// Pipelined per server. A request over `item_size_limit` is refused by itself: a
    /// `set` sends a delete of its key in its place (in order with the batch's other
    /// commands on that key), any other mode sends nothing; a request the server refuses as
    /// too large is refused the same way (memcached unlinks a refused `set`'s old item
    /// itself). Then, as [`Transport::store_many`] says, a server's failure is the answer,
    /// else the first refusal in request order.
    fn store_many(&self, requests: &[Store<'_>]) -> Result<Vec<StoreStatus>> {
        let (stored, refused) = self.store_batch(requests)?;
        stored.into_statuses(refused)
    }

    /// [`Self::store_many`], a failed server's requests told apart when others answered.
    fn store_many_each(&self, requests: &[Store<'_>]) -> Result<ManyStore> {
        let (stored, refused) = self.store_batch(requests)?;
        Ok(stored.with_refused(refused))
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        match self.run(Cmd::Delete(key))? {
            Outcome::Deleted(deleted) => Ok(deleted),
            other => Err(self.outcome_error(key, other)),
        }
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<bool>> {
        self.delete_many_each(keys)?.into_deleted()
    }

    /// Pipelined per server; a failed server's keys told apart when others answered.
    fn delete_many_each(&self, keys: &[&[u8]]) -> Result<ManyDelete> {
        let groups = self.keys_by_server(keys)?;
        let cmd_of = |i: usize| keys.get(i).map(|k| Cmd::Delete(k));
        let outcomes = self.pipelined(&groups, Batch::Each(&cmd_of), RoundLimit::STATUS);
        let (answered, failed) = Self::tolerant(outcomes, |index| members_of(&groups, index))?;
        let mut out = vec![false; keys.len()];
        for (index, answers) in answered {
            for answer in answers {
                match answer {
                    Answer::Key(i, Outcome::Deleted(deleted)) => {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = deleted;
                        }
                    }
                    other => return Err(self.answer_error(index, other)),
                }
            }
        }
        Ok(ManyDelete::with_failed(out, failed))
    }

    /// Each server's keys deleted with no reply per key, in rounds of at most 512: in the
    /// classic protocol `delete <key> noreply` for each, then `version` (memcached sends
    /// nothing for a noreply command, not even an error, so the one reply to read is
    /// `VERSION`, which comes after everything sent before it was processed); in meta
    /// `md <key> q` (memcached leaves out `HD`, sends `NF` and errors) and a last `md`
    /// without `q`, whose tagged reply says every delete before it was processed. Lines
    /// before it are read and checked too, so no reply is ever left on a pooled connection;
    /// an error among them is returned after every server was read. A server that fails or
    /// is down fails the call, as in [`Transport::delete_many`].
    fn delete_many_quiet(&self, keys: &[&[u8]]) -> Result<()> {
        let groups = self.keys_by_server(keys)?;
        let outcomes = self.pipelined(&groups, Batch::QuietDeletes(keys), RoundLimit::STATUS);
        for (index, answers) in Self::strict(outcomes)? {
            if let Some(answer) = answers.into_iter().next() {
                return Err(self.answer_error(index, answer));
            }
        }
        Ok(())
    }

    fn incr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.arith(key, delta, true)
    }

    fn decr(&self, key: &[u8], delta: u64) -> Result<Option<u64>> {
        self.arith(key, delta, false)
    }

    fn touch(&self, key: &[u8], exptime: u32) -> Result<bool> {
        check_key(key)?;
        newcache_transport::check_exptime(exptime)?;
        match self.run(Cmd::Touch { key, exptime })? {
            Outcome::Touched(touched) => Ok(touched),
            other => Err(self.outcome_error(key, other)),
        }
    }

    fn flush_all(&self) -> Result<()> {
        let groups: Vec<(usize, Vec<usize>)> =
            (0..self.servers.len()).map(|i| (i, vec![i])).collect();
        let outcomes = self.pipelined(
            &groups,
            Batch::Line("flush_all", Expect::Status),
            RoundLimit::STATUS,
        );
        flushed(outcomes, |index| self.label(index))
    }

    /// True unless the transport speaks only the classic protocol ([`Protocol::Classic`]).
    /// With [`Protocol::Auto`] a server found without meta answers the meta operations
    /// with [`Error::Unsupported`].
    fn supports_meta(&self) -> bool {
        self.config.protocol != Protocol::Classic
    }

    fn meta_get(&self, key: &[u8], recache_below: u32) -> Result<Option<MetaItem>> {
        check_key(key)?;
        match self.run(Cmd::MetaGet { key, recache_below })? {
            Outcome::Meta(item) => Ok(item),
            other => Err(self.outcome_error(key, other)),
        }
    }

    fn meta_get_many(&self, keys: &[&[u8]], recache_below: u32) -> Result<Vec<Option<MetaItem>>> {
        self.meta_get_many_read(keys, recache_below)
            .map(|read| read.items)
    }

    fn meta_get_many_read(&self, keys: &[&[u8]], recache_below: u32) -> Result<ManyRead<MetaItem>> {
        let groups = self.keys_by_server(keys)?;
        let cmd_of = |i: usize| keys.get(i).map(|&key| Cmd::MetaGet { key, recache_below });
        let outcomes = self.pipelined(&groups, Batch::Each(&cmd_of), RoundLimit::VALUES);
        let mut out = vec![None; keys.len()];
        let (answered, unread) = Self::tolerant(outcomes, |index| members_of(&groups, index))?;
        for (index, answers) in answered {
            for answer in answers {
                match answer {
                    Answer::Key(i, Outcome::Meta(item)) => {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = item;
                        }
                    }
                    other => return Err(self.answer_error(index, other)),
                }
            }
        }
        Ok(ManyRead::with_unread(out, unread))
    }

    fn meta_invalidate(&self, key: &[u8], grace: u32, cas: Option<u64>) -> Result<bool> {
        check_key(key)?;
        match self.run(Cmd::Invalidate { key, grace, cas })? {
            Outcome::Invalidated(found) => Ok(found),
            other => Err(self.outcome_error(key, other)),
        }
    }

    fn stats(&self) -> Result<Vec<ServerStats>> {
        let groups: Vec<(usize, Vec<usize>)> =
            (0..self.servers.len()).map(|i| (i, vec![i])).collect();
        let outcomes = self.pipelined(
            &groups,
            Batch::Line("stats", Expect::Stats),
            RoundLimit::VALUES,
        );
        server_stats(outcomes, |index| self.label(index))
    }
}

impl TextTransport {
    /// The [`Error::ValueTooLarge`] for `request`, refused as too large by server `index`:
    /// naming that server's own limit for the key, asked of it (`stats settings`), when it
    /// answers.
    fn refused_by(&self, index: usize, request: &Store<'_>) -> Error {
        let item_size_max = self.ask_item_size_max(index).ok().flatten();
        request.refused_by_server_at(item_size_max, self.config.item_size_limit)
    }

    /// Server `index`'s `item_size_max` (`stats settings`), kept for the next
    /// [`TextTransport::server_refusal`] ([`learn_item_size_max`]).
    fn ask_item_size_max(&self, index: usize) -> Result<Option<usize>> {
        let groups = [(index, vec![index])];
        let outcomes = self.pipelined(
            &groups,
            Batch::Line("stats settings", Expect::Stats),
            RoundLimit::VALUES,
        );
        let asked = server_stats(outcomes, |index| self.label(index));
        let learnt = self.server(index).ok().map(|s| &s.item_size_max);
        learn_item_size_max(asked, learnt)
    }

    /// The refusal of a request its server would refuse as too large and unlink the key's
    /// old item for ([`Store::needs_server_limit`]: not a `set`, in the meta protocol),
    /// checked against that server's own `-I` before anything is sent.
    pub(crate) fn server_refusal(&self, request: &Store<'_>) -> Option<Error> {
        if !LimitCheck::may_apply(request, self.config.protocol) {
            return None;
        }
        let index = self.server_for_key(request.key).ok()?;
        let server = self.server(index).ok()?;
        let wire = server.wire.load(Ordering::Relaxed);
        match LimitCheck::of(request, self.config.protocol, wire, &server.item_size_max) {
            LimitCheck::Skip => None,
            LimitCheck::Known(max) => over_server_limit(request, Ok(max)),
            LimitCheck::Ask => over_server_limit(request, self.ask_item_size_max(index)),
        }
    }

    fn arith(&self, key: &[u8], delta: u64, incr: bool) -> Result<Option<u64>> {
        check_key(key)?;
        match self.run(Cmd::Arith { key, delta, incr })? {
            Outcome::Counter(n) => Ok(n),
            other => Err(self.outcome_error(key, other)),
        }
    }
}
