//! The [`AsyncTransport`] operations of [`TokioTextTransport`], with the blocking
//! transport's rules (keys checked and values measured before anything is sent, a `set`
//! over the item size limit deleting its key, reads of a failed server's keys as misses in
//! multi-gets).

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use newcache_transport::{
    check_exptime, check_key, AsyncTransport, BoxFuture, Error, Item, ManyDelete, ManyRead,
    ManyStore, MetaItem, Result, ServerStats, Store, StoreMode, StoreStatus,
};

use super::rounds::rounds;
use super::steps::{Answer, AnswerList};
use super::{
    plan_cmds, plan_gets, plan_line, plan_quiet_deletes, Answers, Build, TokioTextTransport,
};
use crate::batch::{flushed, server_stats, unexpected_answer, Batch, RoundLimit, Tolerated};
use crate::command::{Cmd, Outcome};
use crate::errors::{
    closed_without_reply, learn_item_size_max, over_server_limit, refusal_error,
    refused_as_too_large, status_to_error, LimitCheck,
};
use crate::exchange::Closer;
use crate::multi_get::get_cost;
use crate::ops::members_of;
use crate::proto::{Expect, Reply, Status};
use crate::{group_by_server, TextTransport};

/// Each server's index, with the job that builds its part of a batch.
type Groups<'a> = Vec<(usize, Box<Build<'a>>)>;

impl TokioTextTransport {
    /// Puts each key's answer from server `index` into `out` at the key's index, through
    /// `take` (which gives back an outcome the command cannot have): an error line is
    /// `command`'s error, any other answer is unexpected.
    fn spread<T>(
        &self,
        index: usize,
        members: &[usize],
        answers: Answers,
        out: &mut [T],
        command: &str,
        take: impl Fn(Outcome) -> Result<T, Outcome>,
    ) -> Result<()> {
        let label = self.label(index);
        for (&i, answer) in members.iter().zip(answers.list) {
            let value = match answer {
                Answer::Outcome(Outcome::Refused(s)) => {
                    return Err(status_to_error(label.to_string(), s, command))
                }
                Answer::Outcome(outcome) => take(outcome)
                    .map_err(|other| unexpected_answer(label, Answer::Outcome(other)))?,
                other => return Err(unexpected_answer(label, other)),
            };
            if let Some(slot) = out.get_mut(i) {
                *slot = value;
            }
        }
        Ok(())
    }

    /// One keyed command on the server that holds its key: its outcome (an error line is
    /// an error).
    async fn run(&self, cmd: Cmd<'_>) -> Result<Outcome> {
        let index = self.server_for_key(cmd.key())?;
        let label = self.label(index);
        let build = |h: &super::Handle| plan_cmds(label, h, std::iter::once(cmd));
        let Answers { wire, list } = self.exchange(index, &build).await?;
        match list.into_iter().next() {
            Some(Answer::Outcome(Outcome::Refused(status))) => Err(refusal_error(
                label,
                &cmd,
                wire,
                status,
                self.inner.config.item_size_limit,
            )),
            Some(Answer::Outcome(outcome)) => Ok(outcome),
            other => Err(unexpected_answer(label, other)),
        }
    }

    /// Positions `0..count` grouped by the server of their key (`key_of`; a position with
    /// none is left out), in order of first appearance.
    fn groups<'a>(
        &'a self,
        count: usize,
        key_of: impl Fn(usize) -> Option<&'a [u8]>,
    ) -> Result<Vec<(usize, Vec<usize>)>> {
        group_by_server(count, self.inner.servers.len(), key_of, |key| {
            self.server_for_key(key)
        })
    }

    /// The [`Error::ValueTooLarge`] for `request`, refused as too large by server `index`:
    /// naming that server's own limit for the key, asked of it (`stats settings`), when it
    /// answers.
    async fn refused_by(&self, index: usize, request: &Store<'_>) -> Error {
        let item_size_max = self.ask_item_size_max(index).await.ok().flatten();
        request.refused_by_server_at(item_size_max, self.inner.config.item_size_limit)
    }

    /// [`over_limit`](crate::errors::over_limit) with the key's server's limit.
    fn over_limit(&self, request: &Store<'_>) -> Error {
        let server = self.server_for_key(request.key).ok();
        let server = server.and_then(|index| self.server(index).ok());
        let limit = server.map(|s| &s.item_size_max);
        crate::errors::over_limit(request, limit, self.inner.config.item_size_limit)
    }

    /// Server `index`'s `item_size_max` (`stats settings`), kept for the next
    /// [`TokioTextTransport::server_refusal`] (`learn_item_size_max`).
    async fn ask_item_size_max(&self, index: usize) -> Result<Option<usize>> {
        let answers = self
            .on_servers([index], "stats settings", Expect::Stats)
            .await;
        let asked = server_stats(answers, |index| self.label(index).to_string());
        let learnt = self.server(index).ok().map(|s| &s.item_size_max);
        learn_item_size_max(asked, learnt)
    }

    /// The refusal of a request its server would refuse as too large and unlink the key's
    /// old item for, checked against that server's own `-I` before anything is sent (the
    /// blocking transport's rule: `TextTransport::server_refusal`).
    async fn server_refusal(&self, request: &Store<'_>) -> Option<Error> {
        if !LimitCheck::may_apply(request, self.inner.config.protocol) {
            return None;
        }
        let index = self.server_for_key(request.key).ok()?;
        let server = self.server(index).ok()?;
        let wire = server.wire.load(Ordering::Relaxed);
        let config = &self.inner.config;
        match LimitCheck::of(request, config.protocol, wire, &server.item_size_max) {
            LimitCheck::Skip => None,
            LimitCheck::Known(max) => over_server_limit(request, Ok(max)),
            LimitCheck::Ask => over_server_limit(request, self.ask_item_size_max(index).await),
        }
    }

    /// `line` on every server: each server's answers or failure, by index.
    async fn on_every_server(
        &self,
        line: &'static str,
        expect: Expect,
    ) -> Vec<(usize, Result<Vec<Answer>>)> {
        self.on_servers(0..self.inner.servers.len(), line, expect)
            .await
    }

    /// `line` on each server of `servers`: each one's answers or failure, by index.
    async fn on_servers(
        &self,
        servers: impl IntoIterator<Item = usize>,
        line: &'static str,
        expect: Expect,
    ) -> Vec<(usize, Result<Vec<Answer>>)> {
        let groups: Groups<'_> = servers
            .into_iter()
            .map(|i| {
                let build: Box<Build<'_>> =
                    Box::new(move |_h: &super::Handle| Ok(plan_line(line, expect)));
                (i, build)
            })
            .collect();
        let outcomes = self.batch(&groups).await;
        let mut out = Vec::with_capacity(outcomes.len());
        for ((i, _), outcome) in groups.iter().zip(outcomes) {
            let closer = match &outcome {
                Err(e) if closed_without_reply(e) => self.why_closed(*i).await,
                _ => Closer::Neither,
            };
            let outcome = match (closer, outcome) {
                (Closer::Refuses, _) => Err(Error::Unsupported {
                    server: self.label(*i).to_string(),
                    command: line.split(' ').next().unwrap_or(line).to_string(),
                }),
                (Closer::BinaryOnly, _) => Err(crate::errors::probe_closed(self.label(*i))),
                (Closer::Neither, outcome) => {
                    outcome.map(|answers| answers.list.into_iter().collect())
                }
            };
            out.push((*i, outcome));
        }
        out
    }

    /// Server `index` answers `version` and closes a connection on a command nobody knows:
    /// a connection it closed before any reply to a command servers may lack (`stats`,
    /// `flush_all`) was a proxy refusing the command (twemproxy closes the connection on
    /// what it does not proxy), as the blocking transport tells it
    /// ([`TextTransport::classify_close`]); the error is then [`Error::Unsupported`], as
    /// there (it was `Io`, "closed with replies still due"). A server that answers that
    /// command (memcached) had the connection cut after the command may have run. A server
    /// that closes `version` too (as long as a binary header) takes only the binary
    /// protocol ([`Closer::BinaryOnly`]).
    async fn why_closed(&self, index: usize) -> Closer {
        let build = |_h: &super::Handle| Ok(plan_line("version", Expect::Status));
        let alive = match self.exchange(index, &build).await {
            Ok(answers) => matches!(
                answers.list.into_iter().next(),
                Some(Answer::Line(reply)) if matches!(*reply, Reply::Status(Status::Version(_)))
            ),
            Err(e) if closed_without_reply(&e) => return Closer::BinaryOnly,
            Err(_) => false,
        };
        let Ok(server) = self.server(index) else {
            return Closer::Neither;
        };
        if alive
            && super::connect::closes_on_unknown_commands(&self.inner.config, &server.target())
                .await
        {
            Closer::Refuses
        } else {
            Closer::Neither
        }
    }

    /// [`Self::keyed`], a server that failed while others answered told apart
    /// ([`TextTransport::tolerant`]): each server's requests, and the answering servers'
    /// answers with each failed request and its server's failure.
    async fn keyed_tolerant<'a>(
        &'a self,
        count: usize,
        cmd_of: &'a (dyn Fn(usize) -> Option<Cmd<'a>> + Send + Sync),
        limit: RoundLimit,
    ) -> Result<(Vec<(usize, Vec<usize>)>, Tolerated<Answers>)> {
        let outcomes = self.keyed(count, cmd_of, limit).await?;
        let mut placed = Vec::with_capacity(outcomes.len());
        let mut results = Vec::with_capacity(outcomes.len());
        for (index, members, outcome) in outcomes {
            placed.push((index, members));
            results.push((index, outcome));
        }
        let tolerated = TextTransport::tolerant(results, |index| members_of(&placed, index))?;
        Ok((placed, tolerated))
    }

    /// Keyed commands for positions `0..count` (`cmd_of`), one pipelined job per server,
    /// every server's queued before any answer is awaited: per server, its index, its
    /// positions, and its answers (one per position, in that order) or its error.
    async fn keyed<'a>(
        &'a self,
        count: usize,
        cmd_of: &'a (dyn Fn(usize) -> Option<Cmd<'a>> + Send + Sync),
        limit: RoundLimit,
    ) -> Result<Vec<(usize, Vec<usize>, Result<Answers>)>> {
        let placed = self.groups(count, |i| cmd_of(i).map(|c| c.key()))?;
        let mut groups: Groups<'_> = Vec::with_capacity(placed.len());
        for (index, members) in &placed {
            let label = self.label(*index);
            for round in rounds(members, Batch::Each(cmd_of), limit) {
                let members = members.get(round).unwrap_or_default();
                let build: Box<Build<'_>> = Box::new(move |h: &super::Handle| {
                    plan_cmds(
                        label,
                        h,
                        members
                            .iter()
                            .filter_map(|&i| cmd_of(i))
                            .collect::<Vec<_>>()
                            .into_iter(),
                    )
                });
                groups.push((*index, build));
            }
        }
        let outcomes = self.batch(&groups).await;
        drop(groups);
        Ok(placed
            .into_iter()
            .zip(outcomes)
            .map(|((index, members), outcome)| (index, members, outcome))
            .collect())
    }

    async fn arith(&self, key: &[u8], delta: u64, incr: bool) -> Result<Option<u64>> {
        check_key(key)?;
        match self.run(Cmd::Arith { key, delta, incr }).await? {
            Outcome::Counter(n) => Ok(n),
            other => Err(unexpected_answer(
                self.label(self.server_for_key(key)?),
                other,
            )),
        }
    }

    async fn get_many_impl(&self, keys: &[&[u8]]) -> Result<ManyRead> {
        keys.iter().try_for_each(|k| check_key(k))?;
        if keys.is_empty() {
            return Ok(ManyRead::all(Vec::new()));
        }
        if self.inner.servers.len() == 1 {
            return self.get_many_on_one_server(keys).await.map(ManyRead::all);
        }
        let placed = self.groups(keys.len(), |i| keys.get(i).copied())?;
        let mut groups: Groups<'_> = Vec::with_capacity(placed.len());
        for (index, members) in &placed {
            let label = self.label(*index);
            for round in rounds(members, Batch::Gets(keys), RoundLimit::VALUES) {
                let members = members.get(round).unwrap_or_default();
                // A server asked for every key is asked for `keys` as they are: its members
                // are all of them, in order.
                let asked: Cow<'_, [&[u8]]> = if members.len() == keys.len() {
                    Cow::Borrowed(keys)
                } else {
                    let mut asked = Vec::with_capacity(members.len());
                    asked.extend(members.iter().filter_map(|&i| keys.get(i).copied()));
                    Cow::Owned(asked)
                };
                let build: Box<Build<'_>> =
                    Box::new(move |h: &super::Handle| plan_gets(label, h, &asked));
                groups.push((*index, build));
            }
        }
        let outcomes = self.batch(&groups).await;
        let (answered, unread) = TextTransport::tolerant(
            placed
                .iter()
                .zip(outcomes)
                .map(|((index, _), o)| (*index, o))
                .collect(),
            |index| members_of(&placed, index),
        )?;
        let mut out = Vec::new();
        for (index, answers) in answered {
            let members = members_of(&placed, index);
            let in_order = members.iter().copied().eq(0..keys.len());
            let list = match whole(answers.list, in_order, keys.len()) {
                Ok(items) => return Ok(ManyRead::with_unread(items, unread)),
                Err(list) => list,
            };
            out.resize_with(keys.len(), || None);
            self.place_items(index, members.iter().copied(), list, &mut out)?;
        }
        // The keys of servers that failed are in `unread`.
        out.resize_with(keys.len(), || None);
        Ok(ManyRead::with_unread(out, unread))
    }

    /// `get_many` on a cluster of one server: it is asked for every key, as the caller gave
    /// them, with no placement, no list of its members and no batch of one; its failure is
    /// the call's (as [`TextTransport::tolerant`] makes it when every server failed). One
    /// list of items in order is the answer as it is ([`whole`]).
    async fn get_many_on_one_server(&self, keys: &[&[u8]]) -> Result<Vec<Option<Item>>> {
        let label = self.label(0);
        let answers = if RoundLimit::VALUES.fits(keys.iter().map(|k| get_cost(k))) {
            let build = |h: &super::Handle| plan_gets(label, h, keys);
            self.exchange(0, &build).await?
        } else {
            let members: Vec<usize> = (0..keys.len()).collect();
            let groups: Groups<'_> = rounds(&members, Batch::Gets(keys), RoundLimit::VALUES)
                .into_iter()
                .map(|round| {
                    let asked = keys.get(round).unwrap_or_default();
                    let build: Box<Build<'_>> =
                        Box::new(move |h: &super::Handle| plan_gets(label, h, asked));
                    (0, build)
                })
                .collect();
            self.in_rounds(0, &groups).await?
        };
        match whole(answers.list, true, keys.len()) {
            Ok(items) => Ok(items),
            Err(list) => {
                let mut out = Vec::new();
                out.resize_with(keys.len(), || None);
                self.place_items(0, 0..keys.len(), list, &mut out)?;
                Ok(out)
            }
        }
    }

    /// Puts server `index`'s answers to a multi-get of its `members` (the indices of its
    /// keys in the call, in the order asked) into `out`, each item at its key's index.
    fn place_items(
        &self,
        index: usize,
        mut members: impl Iterator<Item = usize>,
        list: AnswerList,
        out: &mut [Option<Item>],
    ) -> Result<()> {
        let label = self.label(index);
        let mut put = |item: Option<Item>| {
            if let Some(slot) = members.next().and_then(|i| out.get_mut(i)) {
                *slot = item;
            }
        };
        for answer in list {
            match answer {
                Answer::Items(items) => items.into_iter().for_each(&mut put),
                Answer::Outcome(Outcome::Item(item)) => put(item),
                Answer::Outcome(Outcome::Refused(s)) => {
                    return Err(status_to_error(label.to_string(), s, "gets"))
                }
                Answer::Line(reply) => match *reply {
                    Reply::Status(s) => return Err(status_to_error(label.to_string(), s, "gets")),
                    other => return Err(unexpected_answer(label, other)),
                },
                other => return Err(unexpected_answer(label, other)),
            }
        }
        Ok(())
    }

    /// The stores of [`AsyncTransport::store_many`], every server's at once: every
    /// request's status, the requests of the servers that failed while others answered,
    /// and the requests refused as too large (by the limit or by the server).
    async fn store_batch(
        &self,
        requests: &[Store<'_>],
    ) -> Result<(ManyStore, Vec<(usize, Error)>)> {
        for r in requests {
            check_key(r.key)?;
            check_exptime(r.exptime)?;
        }
        let limit = self.inner.config.item_size_limit;
        // The requests refused as too large (by the limit or a server's own here, by the
        // server below); one not a `set` sends nothing in its place.
        let mut over = vec![false; requests.len()];
        let mut refused: Vec<(usize, Error)> = Vec::new();
        for ((i, r), over) in requests.iter().enumerate().zip(over.iter_mut()) {
            let refusal = if r.is_too_large(limit) {
                Some(self.over_limit(r))
            } else {
                self.server_refusal(r).await
            };
            if let Some(e) = refusal {
                *over = true;
                refused.push((i, e));
            }
        }
        let is_over = |i: usize| over.get(i).copied().unwrap_or(false);
        let cmd_of = |i: usize| Cmd::for_store(requests.get(i)?, is_over(i));
        let mut out = vec![StoreStatus::NotStored; requests.len()];
        let (placed, (answered, failed)) = self
            .keyed_tolerant(requests.len(), &cmd_of, RoundLimit::STATUS)
            .await?;
        for (index, answers) in answered {
            let label = self.label(index);
            for (&i, answer) in members_of(&placed, index).iter().zip(answers.list) {
                match answer {
                    Answer::Outcome(Outcome::Stored(status)) => {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = status;
                        }
                    }
                    // The delete of a `set` over the limit.
                    Answer::Outcome(Outcome::Deleted(_)) => {}
                    Answer::Outcome(Outcome::Refused(Status::ServerError(m)))
                        if refused_as_too_large(&m) && !is_over(i) =>
                    {
                        if let Some(r) = requests.get(i) {
                            refused.push((i, self.refused_by(index, r).await));
                        }
                    }
                    Answer::Outcome(Outcome::Refused(status)) => {
                        return Err(match cmd_of(i) {
                            Some(cmd) => refusal_error(label, &cmd, answers.wire, status, limit),
                            None => status_to_error(label.to_string(), status, "a store"),
                        })
                    }
                    other => return Err(unexpected_answer(label, other)),
                }
            }
        }
        Ok((ManyStore::with_failed(out, failed), refused))
    }

    async fn delete_many_each_impl(&self, keys: &[&[u8]]) -> Result<ManyDelete> {
        keys.iter().try_for_each(|k| check_key(k))?;
        let cmd_of = |i: usize| keys.get(i).map(|k| Cmd::Delete(k));
        let (placed, (answered, failed)) = self
            .keyed_tolerant(keys.len(), &cmd_of, RoundLimit::STATUS)
            .await?;
        let mut out = vec![false; keys.len()];
        for (index, answers) in answered {
            let members = members_of(&placed, index);
            self.spread(index, members, answers, &mut out, "delete", |o| match o {
                Outcome::Deleted(deleted) => Ok(deleted),
                other => Err(other),
            })?;
        }
        Ok(ManyDelete::with_failed(out, failed))
    }

    async fn delete_many_quiet_impl(&self, keys: &[&[u8]]) -> Result<()> {
        keys.iter().try_for_each(|k| check_key(k))?;
        let placed = self.groups(keys.len(), |i| keys.get(i).copied())?;
        let mut groups: Groups<'_> = Vec::with_capacity(placed.len());
        for (index, members) in &placed {
            for round in rounds(members, Batch::QuietDeletes(keys), RoundLimit::STATUS) {
                let asked: Vec<&[u8]> = members
                    .get(round)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|&i| keys.get(i).copied())
                    .collect();
                let build: Box<Build<'_>> =
                    Box::new(move |h: &super::Handle| Ok(plan_quiet_deletes(h, &asked)));
                groups.push((*index, build));
            }
        }
        let outcomes = self.batch(&groups).await;
        let indexed = placed.iter().map(|(i, _)| *i).zip(outcomes).collect();
        for (index, answers) in TextTransport::strict(indexed)? {
            let label = self.label(index);
            if let Some(answer) = answers.list.into_iter().next() {
                let command = match answers.wire {
                    crate::command::Wire::Classic => "delete",
                    crate::command::Wire::Meta => "md",
                };
                return Err(match answer {
                    Answer::Line(reply) => match *reply {
                        Reply::Status(s) => status_to_error(label.to_string(), s, command),
                        other => unexpected_answer(label, other),
                    },
                    other => unexpected_answer(label, other),
                });
            }
        }
        Ok(())
    }

    async fn meta_get_many_impl(
        &self,
        keys: &[&[u8]],
        recache_below: u32,
    ) -> Result<ManyRead<MetaItem>> {
        keys.iter().try_for_each(|k| check_key(k))?;
        let cmd_of = |i: usize| keys.get(i).map(|&key| Cmd::MetaGet { key, recache_below });
        let (placed, (answered, unread)) = self
            .keyed_tolerant(keys.len(), &cmd_of, RoundLimit::VALUES)
            .await?;
        let mut out = vec![None; keys.len()];
        for (index, answers) in answered {
            let members = members_of(&placed, index);
            self.spread(index, members, answers, &mut out, "mg", |o| match o {
                Outcome::Meta(item) => Ok(item),
                other => Err(other),
            })?;
        }
        Ok(ManyRead::with_unread(out, unread))
    }
}

impl AsyncTransport for TokioTextTransport {
    fn name(&self) -> &'static str {
        "tokio-text"
    }

    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<Item>>> {
        Box::pin(async move {
            check_key(key)?;
            match self.run(Cmd::Get(key)).await? {
                Outcome::Item(item) => Ok(item),
                other => Err(unexpected_answer(
                    self.label(self.server_for_key(key)?),
                    other,
                )),
            }
        })
    }

    /// A server that failed while the others answered leaves its keys as misses, as
    /// libmemcached's multi-get does ([`AsyncTransport::get_many_read`] tells them apart).
    fn get_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<Option<Item>>>> {
        Box::pin(async move { self.get_many_impl(keys).await.map(|read| read.items) })
    }

    fn get_many_read<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<ManyRead>> {
        Box::pin(self.get_many_impl(keys))
    }

    fn store<'a>(&'a self, request: &'a Store<'a>) -> BoxFuture<'a, Result<StoreStatus>> {
        Box::pin(async move {
            check_key(request.key)?;
            check_exptime(request.exptime)?;
            if request.is_too_large(self.inner.config.item_size_limit) {
                if request.mode == StoreMode::Set {
                    self.delete(request.key).await?;
                }
                return Err(self.over_limit(request));
            }
            if let Some(too_large) = self.server_refusal(request).await {
                return Err(too_large);
            }
            match self.run(Cmd::Store(request)).await {
                Ok(Outcome::Stored(status)) => Ok(status),
                Ok(other) => Err(unexpected_answer(
                    self.label(self.server_for_key(request.key)?),
                    other,
                )),
                // Refused by the server (its -I is below item_size_limit): named with its
                // limit.
                Err(Error::ValueTooLarge { .. }) => Err(self
                    .refused_by(self.server_for_key(request.key)?, request)
                    .await),
                Err(e) => Err(e),
            }
        })
    }

    fn store_many<'a>(
        &'a self,
        requests: &'a [Store<'a>],
    ) -> BoxFuture<'a, Result<Vec<StoreStatus>>> {
        Box::pin(async move {
            let (stored, refused) = self.store_batch(requests).await?;
            stored.into_statuses(refused)
        })
    }

    fn store_many_each<'a>(
        &'a self,
        requests: &'a [Store<'a>],
    ) -> BoxFuture<'a, Result<ManyStore>> {
        Box::pin(async move {
            let (stored, refused) = self.store_batch(requests).await?;
            Ok(stored.with_refused(refused))
        })
    }

    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            check_key(key)?;
            match self.run(Cmd::Delete(key)).await? {
                Outcome::Deleted(deleted) => Ok(deleted),
                other => Err(unexpected_answer(
                    self.label(self.server_for_key(key)?),
                    other,
                )),
            }
        })
    }

    fn delete_many<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move { self.delete_many_each_impl(keys).await?.into_deleted() })
    }

    /// Pipelined per server; a failed server's keys told apart when others answered.
    fn delete_many_each<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<ManyDelete>> {
        Box::pin(self.delete_many_each_impl(keys))
    }

    /// As the blocking transport: per server, `delete <key> noreply` for each key and one
    /// `version` (classic), or `md <key> q` for each but the last (meta), whose reply says
    /// every delete before it was processed; every line before it is read and checked.
    fn delete_many_quiet<'a>(&'a self, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.delete_many_quiet_impl(keys))
    }

    fn incr<'a>(&'a self, key: &'a [u8], delta: u64) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(self.arith(key, delta, true))
    }

    fn decr<'a>(&'a self, key: &'a [u8], delta: u64) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(self.arith(key, delta, false))
    }

    fn touch<'a>(&'a self, key: &'a [u8], exptime: u32) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            check_key(key)?;
            check_exptime(exptime)?;
            match self.run(Cmd::Touch { key, exptime }).await? {
                Outcome::Touched(touched) => Ok(touched),
                other => Err(unexpected_answer(
                    self.label(self.server_for_key(key)?),
                    other,
                )),
            }
        })
    }

    fn flush_all(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let outcomes = self.on_every_server("flush_all", Expect::Status).await;
            flushed(outcomes, |index| self.label(index).to_string())
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<Vec<ServerStats>>> {
        Box::pin(async move {
            let outcomes = self.on_every_server("stats", Expect::Stats).await;
            server_stats(outcomes, |index| self.label(index).to_string())
        })
    }

    /// True unless the transport speaks only the classic protocol; with
    /// [`Protocol::Auto`](crate::Protocol::Auto) a server found without meta answers the
    /// meta operations with [`Error::Unsupported`].
    fn supports_meta(&self) -> bool {
        self.inner.config.protocol != crate::Protocol::Classic
    }

    /// Lets go of every connection: requests queued or in flight on one finish there, then
    /// it closes (within a quarter of the read timeout); the next request opens a new one.
    fn as_caller(&self, work: BoxFuture<'static, ()>) -> BoxFuture<'static, ()> {
        Box::pin(super::conn::Who::acting_for_now(work))
    }

    fn close(&self) {
        self.close_connections();
    }

    fn meta_get<'a>(
        &'a self,
        key: &'a [u8],
        recache_below: u32,
    ) -> BoxFuture<'a, Result<Option<MetaItem>>> {
        Box::pin(async move {
            check_key(key)?;
            match self.run(Cmd::MetaGet { key, recache_below }).await? {
                Outcome::Meta(item) => Ok(item),
                other => Err(unexpected_answer(
                    self.label(self.server_for_key(key)?),
                    other,
                )),
            }
        })
    }

    fn meta_get_many<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
        recache_below: u32,
    ) -> BoxFuture<'a, Result<Vec<Option<MetaItem>>>> {
        Box::pin(async move {
            self.meta_get_many_impl(keys, recache_below)
                .await
                .map(|read| read.items)
        })
    }

    fn meta_get_many_read<'a>(
        &'a self,
        keys: &'a [&'a [u8]],
        recache_below: u32,
    ) -> BoxFuture<'a, Result<ManyRead<MetaItem>>> {
        Box::pin(self.meta_get_many_impl(keys, recache_below))
    }

    fn meta_invalidate<'a>(
        &'a self,
        key: &'a [u8],
        grace: u32,
        cas: Option<u64>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            check_key(key)?;
            match self.run(Cmd::Invalidate { key, grace, cas }).await? {
                Outcome::Invalidated(found) => Ok(found),
                other => Err(unexpected_answer(
                    self.label(self.server_for_key(key)?),
                    other,
                )),
            }
        })
    }
}

/// A multi-get's answer from one server that was asked every key, in order (`in_order`), as
/// one list of items (a single server's multi-get): that list is the answer, with no copy.
/// Anything else is handed back to be placed key by key.
fn whole(
    mut list: AnswerList,
    in_order: bool,
    keys: usize,
) -> std::result::Result<Vec<Option<Item>>, AnswerList> {
    match list.pop() {
        Some(Answer::Items(items)) if list.is_empty() && in_order && items.len() == keys => {
            Ok(items)
        }
        Some(last) => {
            list.push(last);
            Err(list)
        }
        None => Err(list),
    }
}
