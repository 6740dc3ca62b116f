//! Batches over several servers: every server's commands written before any reply is read,
//! in rounds small enough that neither side's socket buffers fill (no deadlock), each
//! answer matched to its command.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Instant;

use newcache_transport::{Error, Result, ServerStats};

use crate::cluster::Ticket;
use crate::command::{Cmd, NeedsMeta, Outcome, Wire};
use crate::conn::{Acquire, Conn, Opened, Place};
use crate::errors::status_to_error;
use crate::exchange::Head;
use crate::multi_get::{encode_multi_get, gets_per_key};
use crate::pool::Permit;
use crate::proto::{self, meta, Decoder, Expect, Reply, Status};
use crate::quiet::{encode_quiet_deletes, QuietRound, QuietStep};
use crate::{group_by_server, TextTransport};

impl TextTransport {
    /// Groups positions `0..count` by the server of their key (`key_of`), in order of first
    /// appearance.
    pub(crate) fn by_server<'k>(
        &self,
        count: usize,
        key_of: impl Fn(usize) -> Option<&'k [u8]>,
    ) -> Result<Vec<(usize, Vec<usize>)>> {
        group_by_server(count, self.servers.len(), key_of, |key| {
            self.server_for_key(key)
        })
    }

    /// Pipelined across servers, in rounds: each round writes every server its next chunk
    /// of the batch before reading any reply, so a batch that fits one round (see
    /// [`RoundLimit`]) costs about one round trip however many servers it touches, and a
    /// larger one never has more unread replies or unsent request bytes per server than the
    /// socket buffers hold (no write-write deadlock with the server). Each group's outcome is
    /// its own: a down server fails its group only; a reply that does not answer its request
    /// fails its group with [`Error::Protocol`] (the requests after it on that connection
    /// fail with it, the connection is closed). Lanes take their connections in server order,
    /// so two batches never wait for each other's connections in a circle when
    /// `max_connections` are busy.
    pub(crate) fn pipelined(
        &self,
        groups: &[(usize, Vec<usize>)],
        batch: Batch<'_>,
        limit: RoundLimit,
    ) -> Vec<(usize, Result<Vec<Answer>>)> {
        let mut lanes: Vec<Lane<'_>> = groups
            .iter()
            .enumerate()
            .map(|(position, (index, members))| Lane {
                position,
                index: *index,
                members,
                done: 0,
                round: 0..0,
                first_opaque: 0,
                probe: None,
                conn: None,
                head: Head::default(),
                shortened: false,
                refused: false,
                busy: false,
                ticket: self.cluster.ticket(*index),
                outcome: Ok(Vec::new()),
            })
            .collect();
        lanes.sort_unstable_by_key(|lane| lane.index);
        self.connect_lanes(&mut lanes, batch);
        loop {
            let mut sent = false;
            for lane in lanes.iter_mut() {
                if lane.outcome.is_err() || lane.done >= lane.members.len() {
                    continue;
                }
                match self.send_round(lane, batch, limit) {
                    Ok(()) => sent = true,
                    Err(e) => lane.fail(e),
                }
            }
            if !sent {
                break;
            }
            self.start_round_clock(&mut lanes);
            for lane in lanes.iter_mut() {
                let round = std::mem::replace(&mut lane.round, 0..0);
                if round.is_empty() || lane.outcome.is_err() {
                    continue;
                }
                lane.done = round.end;
                if let Err(e) = self.receive_round(lane, round, batch) {
                    lane.fail(e);
                } else if lane.done >= lane.members.len() {
                    self.finish_lane(lane);
                }
            }
        }
        lanes.sort_unstable_by_key(|lane| lane.position);
        lanes
            .into_iter()
            .map(|mut lane| {
                let index = lane.index;
                self.finish_lane(&mut lane);
                let outcome = std::mem::replace(&mut lane.outcome, Ok(Vec::new()));
                let outcome = self.classify_close(index, lane.head, outcome);
                let outcome = self.refused_at_limit(index, outcome);
                if !lane.busy {
                    self.cluster.report(index, lane.ticket, &outcome);
                }
                (index, outcome)
            })
            .collect()
    }

    /// A lane whose replies are all in gives its connection back to the pool now, not once
    /// the whole batch is done: a batch that waits on a hung server then holds none of the
    /// live servers' connections, which other callers may be waiting for (with a small
    /// `max_connections`). A connection that saw an error line is closed.
    fn finish_lane(&self, lane: &mut Lane<'_>) {
        let Some(conn) = lane.conn.take() else {
            return;
        };
        if lane.refused || lane.outcome.is_err() {
            return;
        }
        let finished = self
            .server(lane.index)
            .and_then(|server| self.finish(server, conn, lane.shortened));
        if let Err(e) = finished {
            lane.fail(e);
        }
    }

    /// Gives every lane its connection: new ones' probes are all sent before any is read,
    /// so a batch's first use of its servers costs one round trip more, not one per server.
    ///
    /// The lanes take their places in their servers' pools in server order (two batches
    /// never wait for each other's connections in a circle), all of them within one read
    /// timeout; then the new connections are opened side by side ([`Self::open_all`]). One
    /// after another, a batch paid a connect timeout per unreachable server and a read
    /// timeout per server whose pool stayed full: 1.25 s for five unreachable servers at a
    /// 250 ms connect timeout, 1.5 s for three hung ones with `max_connections=2` (an
    /// outside audit), where the async transport took 253 ms.
    pub(crate) fn connect_lanes(&self, lanes: &mut [Lane<'_>], batch: Batch<'_>) {
        let until = Instant::now() + self.config.read_timeout;
        let mut to_open = Vec::new();
        for (at, lane) in lanes.iter_mut().enumerate() {
            let placed = self.server(lane.index).and_then(|server| {
                lane.ticket = self.cluster.check_up(lane.index)?;
                match self.acquire(server, until.saturating_duration_since(Instant::now())) {
                    Ok(place) => Ok(place),
                    Err(Acquire::Busy(e)) => {
                        lane.busy = true;
                        Err(e)
                    }
                    Err(Acquire::Failed(e)) => Err(e),
                }
            });
            match placed {
                Ok(Place::Idle(conn)) => lane.conn = Some(conn),
                Ok(Place::New(permit)) => to_open.push((at, permit)),
                Err(e) => lane.fail(e),
            }
            if let Ok(answers) = lane.outcome.as_mut() {
                answers.reserve(match batch {
                    Batch::Line(..) => 1,
                    Batch::QuietDeletes(_) => 0,
                    Batch::Each(_) | Batch::Gets(_) => lane.members.len(),
                });
            }
        }
        let mut probing = false;
        for (at, opened) in self.open_all(lanes, to_open) {
            let Some(lane) = lanes.get_mut(at) else {
                continue;
            };
            match opened {
                Ok(Opened::Ready(conn)) => lane.conn = Some(conn),
                Ok(Opened::Probing(conn, opaque)) => {
                    lane.conn = Some(conn);
                    lane.probe = Some(opaque);
                    probing = true;
                }
                Err(e) => lane.fail(e),
            }
        }
        if !probing {
            return;
        }
        self.start_round_clock(lanes);
        for lane in lanes.iter_mut() {
            let Some(opaque) = lane.probe.take() else {
                continue;
            };
            let Some(conn) = lane.conn.take() else {
                continue;
            };
            match self
                .server(lane.index)
                .and_then(|server| self.end_probe(server, conn, opaque))
            {
                Ok(conn) => lane.conn = Some(conn),
                Err(e) => lane.fail(e),
            }
        }
    }

    /// Opens the new connections of `to_open` (a lane's place in `lanes`, and its place in
    /// the pool), each in a scoped thread of its own when there are several and one of their
    /// servers may be slow to connect to, so that their connects (and TLS handshakes, and
    /// probes' writes) run at once. The threads last as long as the connects; a batch opens
    /// connections only where its servers' pools had none idle.
    fn open_all(
        &self,
        lanes: &[Lane<'_>],
        to_open: Vec<(usize, Permit<Conn>)>,
    ) -> Vec<(usize, Result<Opened>)> {
        let server_of = |at: usize| {
            lanes
                .get(at)
                .ok_or(Error::NoServers)
                .and_then(|lane| self.server(lane.index))
        };
        // Side by side only where a connect may be slow: a server never connected to, or
        // whose last connect failed. Elsewhere a connect takes microseconds, less than
        // starting a thread.
        let may_be_slow = |(at, _): &(usize, Permit<Conn>)| {
            server_of(*at).is_ok_and(|s| !s.connected.load(Ordering::Relaxed))
        };
        if to_open.len() < 2 || !to_open.iter().any(may_be_slow) {
            return to_open
                .into_iter()
                .map(|(at, permit)| (at, server_of(at).and_then(|s| self.open(s, permit))))
                .collect();
        }
        // The caller's subscriber and span go with each opening, so its events (a
        // connection opened, a server marked down) are the call's.
        #[cfg(feature = "tracing")]
        let (dispatch, span) = (
            tracing::dispatcher::get_default(Clone::clone),
            tracing::Span::current(),
        );
        std::thread::scope(|scope| {
            let started: Vec<_> = to_open
                .into_iter()
                .map(|(at, permit)| {
                    #[cfg(feature = "tracing")]
                    let (dispatch, span) = (dispatch.clone(), span.clone());
                    let spawned = server_of(at).and_then(|server| {
                        std::thread::Builder::new()
                            .name("newcache-connect".into())
                            .spawn_scoped(scope, move || {
                                #[cfg(feature = "tracing")]
                                return tracing::dispatcher::with_default(&dispatch, || {
                                    span.in_scope(|| self.open(server, permit))
                                });
                                #[cfg(not(feature = "tracing"))]
                                self.open(server, permit)
                            })
                            .map_err(|source| Error::Io {
                                server: server.label.clone(),
                                source,
                            })
                    });
                    (at, spawned)
                })
                .collect();
            started
                .into_iter()
                .map(|(at, spawned)| {
                    let opened = spawned.and_then(|thread| {
                        thread.join().unwrap_or_else(|_| {
                            Err(Error::Io {
                                server: server_of(at).map(|s| s.label.clone()).unwrap_or_default(),
                                source: std::io::Error::other("opening the connection panicked"),
                            })
                        })
                    });
                    (at, opened)
                })
                .collect()
        })
    }

    /// Gives the lanes' connections one deadline for the replies just asked (when there are
    /// several servers), so that their read timeouts run at once.
    fn start_round_clock(&self, lanes: &mut [Lane<'_>]) {
        if lanes.len() < 2 {
            return;
        }
        let until = Instant::now() + self.config.read_timeout;
        for conn in lanes.iter_mut().filter_map(|lane| lane.conn.as_mut()) {
            conn.until = Some(until);
        }
    }

    /// Writes the lane's next chunk on its connection.
    pub(crate) fn send_round(
        &self,
        lane: &mut Lane<'_>,
        batch: Batch<'_>,
        limit: RoundLimit,
    ) -> Result<()> {
        let server = self.server(lane.index)?;
        let first = lane.done == 0;
        let Some(mut conn) = lane.conn.take() else {
            return Err(Error::Protocol {
                server: server.label.clone(),
                detail: "a batch lost its connection".into(),
            });
        };
        let wire = conn.wire;
        let end = limit.chunk_end(lane.members, lane.done, &|i| batch.cost(i), &|i| {
            batch.reply_cost(i, wire)
        });
        let round = lane.done..end;
        let members = lane.members.get(round.clone()).unwrap_or_default();
        conn.wbuf.clear();
        lane.first_opaque = conn.opaque;
        if let Err(NeedsMeta(what)) = batch.encode(&mut conn, members) {
            conn.wbuf.clear();
            self.checkin(server, conn);
            return Err(Error::Unsupported {
                server: server.label.clone(),
                command: what.into(),
            });
        }
        if first {
            lane.head = Head::of(&conn.wbuf);
        }
        self.send(server, &mut conn)?;
        lane.conn = Some(conn);
        lane.round = round;
        Ok(())
    }

    /// Reads the replies to the lane's members `round`, each checked against its request.
    /// On an error the connection is dropped, unread.
    pub(crate) fn receive_round(
        &self,
        lane: &mut Lane<'_>,
        round: Range<usize>,
        batch: Batch<'_>,
    ) -> Result<()> {
        let server = self.server(lane.index)?;
        let Some(mut conn) = lane.conn.take() else {
            return Ok(());
        };
        let Ok(answers) = lane.outcome.as_mut() else {
            return Ok(());
        };
        let members = lane.members.get(round.clone()).unwrap_or_default();
        let wire = conn.wire;
        let mut opaque = lane.first_opaque;
        match (batch, wire) {
            (Batch::Line(_, expect), _) => {
                let (reply, short) = self.receive(server, &mut conn, &mut Decoder::new(expect))?;
                lane.shortened |= short;
                if matches!(&reply, Reply::Status(s) if s.is_error()) {
                    lane.refused = true;
                }
                answers.push(Answer::Line(Box::new(reply)));
            }
            (Batch::Gets(keys), _) if gets_per_key(wire, members.len()) => {
                let asked = members.iter().filter_map(|&i| keys.get(i).copied());
                let short = self.read_gets(server, &mut conn, asked, opaque, |m, item| {
                    if let Some(&i) = members.get(m) {
                        answers.push(Answer::Key(i, Outcome::Item(item)));
                    }
                })?;
                lane.shortened |= short;
            }
            (Batch::Gets(keys), _) => {
                let closer = match wire {
                    Wire::Meta => members
                        .last()
                        .and_then(|&i| keys.get(i))
                        .map(|&key| (opaque, key)),
                    Wire::Classic => None,
                };
                let mut items = vec![None; members.len()];
                let key_at = |m: usize| members.get(m).and_then(|&i| keys.get(i)).copied();
                let short = self.read_multi_get(
                    server,
                    &mut conn,
                    members.len(),
                    key_at,
                    &mut items,
                    closer,
                )?;
                lane.shortened |= short;
                for (&i, item) in members.iter().zip(items) {
                    answers.push(Answer::Key(i, Outcome::Item(item)));
                }
            }
            (Batch::Each(_), _) => {
                for &i in members {
                    let Some(cmd) = batch.cmd(i) else { continue };
                    let mut decoder = Decoder::new(cmd.expect(wire));
                    let (reply, short) = self.receive(server, &mut conn, &mut decoder)?;
                    lane.shortened |= short;
                    let outcome =
                        crate::command::interpret(&cmd, wire, reply, decoder.tag(), opaque)
                            .map_err(|m| self.mismatch(server, m))?;
                    opaque = opaque.wrapping_add(1);
                    match outcome {
                        Outcome::Refused(status) => {
                            self.note_refusal(server, wire, &status);
                            lane.refused = true;
                            answers.push(Answer::Refused(Some(i), cmd.name(wire), status));
                        }
                        outcome => answers.push(Answer::Key(i, outcome)),
                    }
                }
            }
            (Batch::QuietDeletes(keys), wire) => {
                let mut round = QuietRound::new(wire, opaque, members.len());
                let key_at = |n: usize| members.get(n).and_then(|&i| keys.get(i)).copied();
                loop {
                    let mut decoder = Decoder::new(round.expect());
                    let (reply, short) = self.receive(server, &mut conn, &mut decoder)?;
                    lane.shortened |= short;
                    match round
                        .take(reply, decoder.tag(), key_at)
                        .map_err(|m| self.mismatch(server, m))?
                    {
                        QuietStep::More => {}
                        QuietStep::Refused(s) => {
                            lane.refused = true;
                            answers.push(Answer::Refused(None, round.command(), s));
                        }
                        QuietStep::RefusedLast(s) => {
                            // Which delete an untagged error line answers is not known, nor
                            // whether the last one's reply is still to come: the connection
                            // is dropped with what is left on it.
                            lane.refused = true;
                            lane.done = lane.members.len();
                            answers.push(Answer::Refused(None, round.command(), s));
                            break;
                        }
                        QuietStep::Done => break,
                    }
                }
            }
        }
        if wire == Wire::Classic && !conn.rbuf.filled().is_empty() {
            // Bytes after a round's replies, before the next round was even sent: the
            // replies just read may have been someone else's.
            return Err(Error::Protocol {
                server: server.label.clone(),
                detail: format!(
                    "{} bytes followed the replies of a pipelined round; the connection was closed",
                    conn.rbuf.filled().len()
                ),
            });
        }
        lane.conn = Some(conn);
        Ok(())
    }

    /// Every group's answers, or the first group's error (after every group was read).
    pub(crate) fn strict<A>(outcomes: Vec<(usize, Result<A>)>) -> Result<Vec<(usize, A)>> {
        outcomes
            .into_iter()
            .map(|(index, outcome)| outcome.map(|answers| (index, answers)))
            .collect()
    }

    /// For reads: the answers of the servers that answered, and the keys of those that are
    /// down or failed (`members` gives a server's), each with its server's failure: not
    /// read, but no misses either ([`newcache_transport::ManyRead::unread`]; `get_many` reads them as misses, as
    /// libmemcached's multi-get does). A server whose replies could not be read (garbage, a
    /// reply to another request: [`Error::Protocol`], its connection closed) failed too. An
    /// error when every server failed, or when one gave a reply that is an error of its own.
    pub(crate) fn tolerant<'m, A>(
        outcomes: Vec<(usize, Result<A>)>,
        members: impl Fn(usize) -> &'m [usize],
    ) -> Result<Tolerated<A>> {
        let mut answered = Vec::with_capacity(outcomes.len());
        let mut failed: Vec<(usize, Error)> = Vec::new();
        for (index, outcome) in outcomes {
            match outcome {
                Ok(answers) => answered.push((index, answers)),
                Err(e) if e.is_server_failure() || matches!(e, Error::Protocol { .. }) => {
                    failed.push((index, e))
                }
                Err(e) => return Err(e),
            }
        }
        if answered.is_empty() {
            if let Some((_, e)) = failed.into_iter().next() {
                return Err(e);
            }
            return Ok((answered, Vec::new()));
        }
        let mut unread = Vec::new();
        for (index, e) in failed {
            unread.extend(members(index).iter().map(|&i| (i, e.for_another_key())));
        }
        Ok((answered, unread))
    }
}

/// An answer that may be a one-line command's reply: the blocking batches' and the async
/// transport's, read by the same functions ([`server_stats`], [`flushed`]).
pub(crate) trait LineAnswer: std::fmt::Debug + Sized {
    /// The reply, when this is a one-line command's; else the answer back.
    fn into_line(self) -> std::result::Result<Reply, Self>;
}

impl LineAnswer for Answer {
    fn into_line(self) -> std::result::Result<Reply, Self> {
        match self {
            Answer::Line(reply) => Ok(*reply),
            other => Err(other),
        }
    }
}

/// `stats` on every server (`outcomes`: each server's answers or failure, by index): each
/// server's statistics, in server order, a failed one ([`Error::is_server_failure`]) listed
/// with its failure; an error when every server failed, or when one answered with anything
/// but its statistics.
pub(crate) fn server_stats<A: LineAnswer>(
    outcomes: Vec<(usize, Result<Vec<A>>)>,
    label: impl Fn(usize) -> String,
) -> Result<Vec<ServerStats>> {
    let out = outcomes
        .into_iter()
        .map(|(index, outcome)| {
            let server = label(index);
            match outcome.and_then(|answers| one_servers_stats(&server, answers)) {
                Ok(stats) => ServerStats::answered(server, stats),
                // Whatever kept a server's statistics from being read (down, or a reply
                // that is not memcached's) is that server's failure, listed beside the
                // others' statistics: a garbled reply from one server failed the whole
                // call, the healthy servers' statistics lost (an outside audit).
                Err(e) => ServerStats::failed(server, e),
            }
        })
        .collect();
    ServerStats::all_or_first_failure(out)
}

/// The statistics in one server's `answers` to `stats`: exactly one list of them.
fn one_servers_stats<A: LineAnswer>(
    server: &str,
    answers: Vec<A>,
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut stats = None;
    for answer in answers {
        match answer.into_line() {
            Ok(Reply::Stats(list)) if stats.is_none() => stats = Some(list.into_iter().collect()),
            Ok(Reply::Status(s)) => return Err(status_to_error(server.to_owned(), s, "stats")),
            Ok(other) => return Err(unexpected_answer(server.to_owned(), other)),
            Err(other) => return Err(unexpected_answer(server.to_owned(), other)),
        }
    }
    stats.ok_or_else(|| unexpected_answer(server.to_owned(), "no statistics"))
}

/// `flush_all` on every server (`outcomes`: each server's answers or failure, by index):
/// done when every server said `OK`, else the first server's error (the others were
/// flushed all the same).
pub(crate) fn flushed<A: LineAnswer>(
    outcomes: Vec<(usize, Result<Vec<A>>)>,
    label: impl Fn(usize) -> String,
) -> Result<()> {
    for (index, answers) in TextTransport::strict(outcomes)? {
        for answer in answers {
            match answer.into_line() {
                Ok(Reply::Status(Status::Ok)) => {}
                Ok(Reply::Status(status)) => {
                    return Err(status_to_error(label(index), status, "flush_all"))
                }
                Ok(other) => return Err(unexpected_answer(label(index), other)),
                Err(other) => return Err(unexpected_answer(label(index), other)),
            }
        }
    }
    Ok(())
}

/// The error for an answer a command cannot have.
pub(crate) fn unexpected_answer(server: impl Into<String>, what: impl std::fmt::Debug) -> Error {
    Error::Protocol {
        server: server.into(),
        detail: format!("unexpected answer {what:?}"),
    }
}

/// What [`TextTransport::tolerant`] keeps of a read's outcomes: each server's answers that
/// came, by server, and the keys not read (their positions), each with its server's failure.
pub(crate) type Tolerated<A> = (Vec<(usize, A)>, Vec<(usize, Error)>);

/// One answer of a pipelined batch.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A keyed command's outcome (never [`Outcome::Refused`]), with its key's position.
    Key(usize, Outcome),
    /// An error line, with the position of the command it answered when that is known, and
    /// the command's name.
    Refused(Option<usize>, &'static str, Status),
    /// The reply to a one-line command (`flush_all`, `stats`), boxed: a [`Reply`] keeps a
    /// value inline, and answers of keyed batches are many.
    Line(Box<Reply>),
}

/// One server's part of a pipelined batch while it runs.
pub(crate) struct Lane<'g> {
    /// Its group's position in the batch (lanes run in server order, answer in this one).
    position: usize,
    index: usize,
    /// Positions (into the caller's keys or requests) grouped on this server.
    members: &'g [usize],
    /// Members already sent and answered.
    done: usize,
    /// Members sent in this round, their replies still unread.
    round: Range<usize>,
    /// The opaque token of the round's first meta command (the others follow it).
    first_opaque: u32,
    /// The token of the probe sent on a new connection, its reply still unread.
    probe: Option<u32>,
    conn: Option<Conn>,
    /// The first command sent, in case the server closes the connection on it.
    head: Head,
    /// The socket's read timeout was shortened and must be restored before reuse.
    shortened: bool,
    /// An error line was read: the connection is not pooled.
    refused: bool,
    /// The lane failed waiting for a connection, which is no failure of the server.
    busy: bool,
    /// What the lane's server record was when it was let through, for the report.
    ticket: Ticket,
    outcome: Result<Vec<Answer>>,
}

impl Lane<'_> {
    /// Fails the lane: its connection is dropped, never reused half-read.
    pub(crate) fn fail(&mut self, e: Error) {
        self.conn = None;
        self.round = 0..0;
        self.outcome = Err(e);
    }
}

/// What a pipelined batch sends each server for its members (positions into the caller's
/// keys or requests).
#[derive(Clone, Copy)]
pub(crate) enum Batch<'a> {
    /// One keyed command per member (none for a member it gives `None`).
    Each(&'a dyn Fn(usize) -> Option<Cmd<'a>>),
    /// A multi-get of the members' keys: one `gets` per round (closed in meta by a tagged
    /// `mg`, [`encode_multi_get`]), or in meta one `mg` per key for rounds of up to
    /// [`META_GETS_PER_KEY`](crate::multi_get::META_GETS_PER_KEY) keys.
    Gets(&'a [&'a [u8]]),
    /// Deletes of the members' keys with no reply per key: `delete <key> noreply` and a
    /// closing `version` in the classic protocol; in meta `md <key> q` (memcached leaves out
    /// the `HD`) and a last `md` without `q`, whose tagged reply closes the round.
    QuietDeletes(&'a [&'a [u8]]),
    /// One command line per server (`flush_all`, `stats`), the same in either dialect.
    Line(&'static str, Expect),
}

/// Request bytes of one key in a multi-get or a quiet delete, beyond the key: the command,
/// its flags and the tag in meta.
pub(crate) const KEY_OVERHEAD: usize = 24;

impl<'a> Batch<'a> {
    pub(crate) fn cmd(&self, i: usize) -> Option<Cmd<'a>> {
        match *self {
            Batch::Each(cmd_of) => cmd_of(i),
            Batch::Gets(keys) => keys.get(i).map(|k| Cmd::Get(k)),
            Batch::QuietDeletes(_) | Batch::Line(..) => None,
        }
    }

    /// Member `i`'s request bytes, about.
    pub(crate) fn cost(&self, i: usize) -> usize {
        match *self {
            Batch::Each(_) => self.cmd(i).map_or(0, |c| c.cost()),
            Batch::Gets(keys) | Batch::QuietDeletes(keys) => {
                keys.get(i).map_or(0, |k| k.len() + KEY_OVERHEAD)
            }
            Batch::Line(line, _) => line.len() + 2,
        }
    }

    /// Member `i`'s reply bytes when they do not carry a value (a value's size is not
    /// known: value replies are bounded by their requests' bytes instead, see
    /// [`RoundLimit::VALUES`]).
    pub(crate) fn reply_cost(&self, i: usize, wire: Wire) -> usize {
        match (*self, wire) {
            (Batch::Each(_), _) => match self.cmd(i) {
                Some(Cmd::Get(_) | Cmd::MetaGet { .. }) | None => 0,
                Some(cmd) => cmd.reply_cost(wire),
            },
            (Batch::QuietDeletes(keys), Wire::Meta) => keys.get(i).map_or(0, |k| k.len() + 20),
            _ => 0,
        }
    }

    /// Appends the commands for `members` in the connection's dialect, each meta command
    /// tagged with the connection's next opaque token.
    pub(crate) fn encode(
        &self,
        conn: &mut Conn,
        members: &[usize],
    ) -> std::result::Result<(), NeedsMeta> {
        let wire = conn.wire;
        match (*self, wire) {
            (Batch::Line(line, _), _) => proto::encode_line(&mut conn.wbuf, line),
            (Batch::Gets(keys), wire) if gets_per_key(wire, members.len()) => {
                for key in members.iter().filter_map(|&i| keys.get(i)) {
                    let opaque = conn.next_opaque();
                    meta::encode_get(&mut conn.wbuf, key, opaque);
                }
            }
            (Batch::Gets(keys), _) => {
                encode_multi_get(conn, members.iter().filter_map(|&i| keys.get(i).copied()));
            }
            (Batch::QuietDeletes(keys), wire) => {
                let opaque = &mut conn.opaque;
                encode_quiet_deletes(
                    &mut conn.wbuf,
                    wire,
                    members.iter().filter_map(|&i| keys.get(i).copied()),
                    members.len(),
                    || {
                        let token = *opaque;
                        *opaque = token.wrapping_add(1);
                        token
                    },
                );
            }
            (Batch::Each(_), _) => {
                for cmd in members.iter().filter_map(|&i| self.cmd(i)) {
                    let opaque = conn.next_opaque();
                    cmd.encode(&mut conn.wbuf, wire, opaque)?;
                }
            }
        }
        Ok(())
    }
}

/// How much of a batch one pipelined round sends one server before reading its replies.
///
/// memcached stops reading a connection while it cannot send that connection's replies, so
/// a client that writes a whole large batch before reading blocks in its write until the
/// write timeout once the replies fill the socket buffers. A round stays below both sides'
/// buffers: for commands whose replies are one short line (stores, deletes: a status line,
/// or a meta `HD` with the key and the token), at most [`RoundLimit::STATUS`]'s commands
/// and reply bytes, so their replies always fit in the client's receive buffer and the
/// server never stops reading; for commands whose replies carry values (of any size), at
/// most [`RoundLimit::VALUES`]'s request bytes, so the request always fits in the send and
/// receive buffers even when the server stops reading after the first keys. Every round has
/// at least one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoundLimit {
    commands: usize,
    bytes: usize,
    replies: usize,
}

impl RoundLimit {
    /// Stores and deletes: 512 replies, at most 64 KB of them unread; the request byte
    /// bound only caps the write buffer.
    pub(crate) const STATUS: RoundLimit = RoundLimit {
        commands: 512,
        bytes: 1024 * 1024,
        replies: 64 * 1024,
    };
    /// Multi-gets and meta gets: 32 KB of request, well inside loopback's and Linux's
    /// default socket buffers (16 KB send + 128 KB receive at least).
    pub(crate) const VALUES: RoundLimit = RoundLimit {
        commands: 4096,
        bytes: 32 * 1024,
        replies: usize::MAX,
    };

    /// The end of the chunk of `members` that starts at `start`: as many members as fit,
    /// at least one. `cost` and `reply_cost` take a member (a position) and give its
    /// request and (value-less) reply bytes.
    pub(crate) fn chunk_end(
        &self,
        members: &[usize],
        start: usize,
        cost: &impl Fn(usize) -> usize,
        reply_cost: &impl Fn(usize) -> usize,
    ) -> usize {
        let mut bytes = 0usize;
        let mut replies = 0usize;
        let mut end = start;
        for &member in members.get(start..).unwrap_or_default() {
            let c = cost(member);
            let r = reply_cost(member);
            if end > start
                && (end - start >= self.commands
                    || bytes.saturating_add(c) > self.bytes
                    || replies.saturating_add(r) > self.replies)
            {
                break;
            }
            bytes = bytes.saturating_add(c);
            replies = replies.saturating_add(r);
            end += 1;
        }
        end
    }

    /// True when a batch of these request costs fits one round.
    pub(crate) fn fits(&self, costs: impl Iterator<Item = usize>) -> bool {
        let mut count = 0usize;
        let mut bytes = 0usize;
        for c in costs {
            count += 1;
            bytes = bytes.saturating_add(c);
            if count > self.commands || bytes > self.bytes {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use newcache_transport::Store;

    use super::*;
    use crate::multi_get::get_cost;

    #[test]
    fn rounds_take_what_fits_and_at_least_one_command() {
        let limit = RoundLimit {
            commands: 3,
            bytes: 25,
            replies: 100,
        };
        let members: Vec<usize> = (0..10).collect();
        let ten = |_: usize| 10;
        let none = |_: usize| 0;
        assert_eq!(limit.chunk_end(&members, 0, &ten, &none), 2, "bytes bound");
        assert_eq!(limit.chunk_end(&members, 8, &ten, &none), 10, "the tail");
        assert_eq!(
            limit.chunk_end(&members, 10, &ten, &none),
            10,
            "nothing left"
        );
        assert_eq!(
            limit.chunk_end(&members, 0, &|_| 1, &none),
            3,
            "command bound"
        );
        assert_eq!(
            limit.chunk_end(&members, 4, &|_| 100, &none),
            5,
            "one oversized command"
        );
        assert_eq!(
            limit.chunk_end(&members, 0, &|_| 1, &|_| 60),
            1,
            "reply bytes bound"
        );
        assert!(limit.fits([10, 10].into_iter()));
        assert!(!limit.fits([10, 10, 10].into_iter()));
        assert!(!limit.fits([1, 1, 1, 1].into_iter()));
        // A get_many of 100 keys of 250 bytes, or a set_many of 100 values of 1 KB, is one
        // round: every server gets its request before any reply is read.
        assert!(RoundLimit::VALUES.fits(std::iter::repeat_n(get_cost(&[b'k'; 250]), 100)));
        let key = [b'k'; 250];
        let value = [b'v'; 1024];
        let set = Store::set(&key, &value, 0, 0);
        let cmd = Cmd::Store(&set);
        let members: Vec<usize> = (0..100).collect();
        for wire in [Wire::Meta, Wire::Classic] {
            assert_eq!(
                RoundLimit::STATUS
                    .chunk_end(&members, 0, &|_| cmd.cost(), &|_| cmd.reply_cost(wire)),
                100
            );
        }
    }
}
