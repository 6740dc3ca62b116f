//! One multiplexed connection: its queue, the task that writes what is queued and reads the
//! replies, the FIFO of requests written and not yet answered, and the direct path of a
//! lone caller (see the [module documentation](super)).
//!
//! # Who reads
//!
//! The socket's replies are read by one party at a time, its *owner* ([`Owner`]): the
//! connection's task, or a caller on the direct path. Whoever reads does it through
//! [`Conn::pump`] with the read side locked, so the decoding state (buffer, decoder) is one
//! and the same whoever reads next; only the owner polls the socket, so the socket's read
//! waker is always the owner's. The task owns it by default; a caller takes it only when
//! the connection is idle (nothing queued, written or in flight) and was last used by a
//! lone caller (its last busy stretch carried one job), and gives it back when
//! its reply is in, when it is dropped or times out, or when the task takes it back
//! because other requests were written behind it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use newcache_transport::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::halves::{ReadHalf, WriteHalf};
use super::steps::{may_hold_a_reply, Answer, AnswerList, Steps, Taken};
use crate::command::{Outcome, Wire};
use crate::conn::{ReadBuf, READ_BUF, WIRE_UNKNOWN};
use crate::proto::{meta, Decoder, Expect, Reply, Status};

/// The most reads a direct caller makes in one poll after the runtime said `Pending` (its
/// budget spent, or the socket found empty): each takes what the socket holds, up to the
/// read buffer or the value's room, and a reply is nearly always whole after one or two.
const MAX_READS_PAST_PENDING: u32 = 64;

mod abandoned;
mod direct;
mod writer;
pub(super) use abandoned::{Abandoned, Who};
pub(super) use direct::Direct;
use writer::{nothing_waiting, write_loop};

/// Why a job got no answers.
#[derive(Debug)]
pub(super) enum Failure {
    /// Nothing of it was written: it may be sent again on another connection.
    NotSent,
    /// It was written (or may have been), and failed.
    Failed(Error),
}

/// What a job's caller is sent.
pub(super) type JobResult = Result<AnswerList, Failure>;

/// Requests of one caller, written together, and the replies they await.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) bytes: Vec<u8>,
    pub(super) steps: Steps,
    pub(super) reply: JobReply,
}

/// Where a queued job's result goes. Dropped before the job was written (the connection's
/// task dropped with the job in its queue: its runtime shut down), it answers "not sent",
/// so the caller sends the job again on a new connection; it used to fail as "may have
/// run" (an outside audit: the first request after `shutdown_background` of the runtime
/// that opened the connection, 2 of 6 runs). Once the job is written its channel is taken
/// out ([`JobReply::written`]): a written job is never called unsent.
#[derive(Debug)]
pub(super) struct JobReply(Option<oneshot::Sender<JobResult>>);

impl JobReply {
    pub(super) fn new(tx: oneshot::Sender<JobResult>) -> Self {
        JobReply(Some(tx))
    }

    /// Answers the job.
    pub(super) fn send(mut self, result: JobResult) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(result);
        }
    }

    /// The channel, for a job being written now (its answer then comes from the FIFO).
    fn written(mut self) -> ReplyTo {
        self.0.take().map_or(ReplyTo::Nowhere, ReplyTo::Channel)
    }

    /// Its caller left.
    pub(super) fn is_closed(&self) -> bool {
        self.0.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    /// Ready once its caller left.
    pub(super) fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(tx) => tx.poll_closed(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for JobReply {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Err(Failure::NotSent));
        }
    }
}

/// A job written and not fully answered.
struct Pending {
    /// Its number on this connection.
    id: u64,
    steps: Steps,
    next: usize,
    answers: AnswerList,
    reply: ReplyTo,
    /// An error line was read: the connection closes once the job is answered.
    close_after: bool,
}

/// Where a job's result goes.
#[derive(Debug)]
enum ReplyTo {
    /// A queued caller's channel.
    Channel(oneshot::Sender<JobResult>),
    /// The direct caller, which takes it from [`State::direct_result`] (no channel to
    /// allocate on a lone caller's path).
    Caller,
    /// Nobody: the caller was answered already (timed out), or left.
    Nowhere,
}

impl State {
    /// Nothing is in flight, held, or read by a direct caller, and no direct caller's
    /// request waits to be written whole: the classic protocol's writer may write.
    fn clear(&self) -> bool {
        self.fifo.is_empty()
            && self.held.is_none()
            && self.owner == Owner::Task
            && self.unfinished.is_none()
    }

    /// Job `id` while it awaits its replies, or their check ([`State::held`]).
    fn in_flight(&mut self, id: u64) -> Option<&mut Pending> {
        self.fifo
            .iter_mut()
            .chain(self.held.iter_mut())
            .find(|p| p.id == id)
    }

    /// Enters a job written now (or being written) at the back of the FIFO, numbered, its
    /// wait for a reply starting now if nothing was in flight: its number.
    fn enter(&mut self, steps: Steps, reply: ReplyTo) -> u64 {
        if self.fifo.is_empty() {
            self.busy_since = Instant::now();
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.period_jobs = self.period_jobs.saturating_add(1);
        self.fifo.push_back(Pending {
            id,
            answers: AnswerList::with_capacity(steps.len()),
            steps,
            next: 0,
            reply,
            close_after: false,
        });
        id
    }

    /// Gives job `id`'s `result` to where `reply` says: a direct caller's is kept here for
    /// it to take ([`State::direct_result`]), a channel and the result come back to be
    /// sent once the state is unlocked.
    fn answer(
        &mut self,
        id: u64,
        reply: ReplyTo,
        result: JobResult,
    ) -> Option<(oneshot::Sender<JobResult>, JobResult)> {
        match reply {
            ReplyTo::Channel(reply) => Some((reply, result)),
            ReplyTo::Caller => {
                self.direct_result = Some((id, result));
                None
            }
            ReplyTo::Nowhere => None,
        }
    }
}

/// Why a connection closed.
#[derive(Debug, Clone)]
enum Fatal {
    Timeout(Duration),
    Io(io::ErrorKind, String),
    /// A TLS failure (a record that does not decrypt, an alert from the server), kept
    /// typed, as the blocking transport and the handshake keep it.
    #[cfg(feature = "tls")]
    Tls(io::ErrorKind, rustls::Error),
    Protocol(String),
    /// Closed with nothing in flight: idle, or its transport dropped.
    Closed,
    /// Closed by the server with replies due and no byte of them read: what a proxy does
    /// with a command it does not take (twemproxy and `stats`).
    ClosedWithoutReply,
    /// The server's refusal of the connection itself (memcached at its connection limit).
    Server(String),
}

impl Fatal {
    fn error(&self, label: &str) -> Error {
        let server = label.to_string();
        match self {
            Fatal::Timeout(after) => Error::Timeout {
                server,
                after: *after,
            },
            Fatal::Io(kind, message) => Error::Io {
                server,
                source: io::Error::new(*kind, message.clone()),
            },
            #[cfg(feature = "tls")]
            Fatal::Tls(kind, tls) => Error::Io {
                server,
                source: io::Error::new(*kind, tls.clone()),
            },
            Fatal::Protocol(detail) => Error::Protocol {
                server,
                detail: detail.clone(),
            },
            Fatal::Closed => Error::Io {
                server,
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "the connection was closed"),
            },
            Fatal::ClosedWithoutReply => Error::Io {
                server,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    crate::errors::ClosedWithoutReply,
                ),
            },
            Fatal::Server(message) => Error::Server {
                server,
                message: message.clone(),
            },
        }
    }

    /// What a job not yet written is answered when its connection fails so: "not sent"
    /// (it may go on another connection), but a TLS failure (a server's alert, a record
    /// that does not decrypt) is the job's error, so that its caller learns why (sent again
    /// on new connections, the job ended as "closed before the request could be sent").
    pub(super) fn unsent(&self, label: &str) -> Failure {
        if let Fatal::Server(_) = self {
            return Failure::Failed(self.error(label));
        }
        #[cfg(feature = "tls")]
        if let Fatal::Tls(..) = self {
            return Failure::Failed(self.error(label));
        }
        let _ = label;
        Failure::NotSent
    }

    fn io(e: &io::Error) -> Fatal {
        #[cfg(feature = "tls")]
        if let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            return Fatal::Tls(e.kind(), tls.clone());
        }
        Fatal::Io(e.kind(), e.to_string())
    }
}

/// Counts of what the async transport's connections did.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connections: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) jobs: AtomicU64,
    pub(super) direct: AtomicU64,
}

/// What a connection is set up with.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) label: String,
    pub(super) wire: Wire,
    /// One request at a time, not pipelined: the classic protocol (no tags to match
    /// pipelined replies by) and TLS ([`serial_over_tls`](super::serial_over_tls)).
    pub(super) serial: bool,
    pub(super) read_timeout: Duration,
    pub(super) write_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) queue: usize,
    /// The server's probed dialect, reset when a meta command is answered `ERROR` with
    /// `reprobe` (protocol auto): the next connection probes again.
    pub(super) server_wire: Arc<AtomicU8>,
    /// The server's requests whose callers gave up on them ([`Conn::mark_abandoned`]).
    pub(super) abandoned: Arc<Abandoned>,
    pub(super) reprobe: bool,
    pub(super) counters: Arc<Counters>,
}

/// Who reads the socket's replies now (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The connection's task (and, with nothing in flight, nobody is reading).
    Task,
    /// The caller of the job with this number, on the direct path.
    Direct(u64),
}

struct State {
    fifo: VecDeque<Pending>,
    /// A job whose last reply was read and whose answer waits for the bytes after that
    /// reply to check out: the next reply answers its own request, or the read ended right
    /// there ([`Conn::release`]). A reply whose data took in bytes that were not its own (a
    /// middlebox that duplicated a segment) ends amid other replies' bytes, and what
    /// follows it does not check out: the job then fails with the connection, where it was
    /// handed a value with another request's bytes in it.
    held: Option<Pending>,
    /// When the oldest job in flight began to wait for its next reply: when the FIFO last
    /// went from empty to not, or a reply last came whole with jobs still in flight
    /// ([`Conn::deadline`]).
    busy_since: Instant,
    /// The queue's senders are all gone: close once nothing is in flight.
    closing: bool,
    owner: Owner,
    /// The direct caller's waker, woken when the task takes the reading back, answers
    /// the direct caller's job, or the connection fails.
    direct_waker: Option<Waker>,
    /// The result of a direct caller's job ([`ReplyTo::Caller`]) and its number, until
    /// the caller takes it. While it is here no other request takes the direct path, so
    /// it is never overwritten.
    direct_result: Option<(u64, JobResult)>,
    /// The connection task's waker.
    task_waker: Option<Waker>,
    /// `None` once the connection is closed.
    writer: Option<Arc<WriteHalf>>,
    /// The task is writing (bytes in flight that the FIFO may not show).
    writing: bool,
    /// A direct caller's request the socket did not take whole: its bytes and how many
    /// were written, for the task to write before anything else.
    unfinished: Option<(Vec<u8>, usize)>,
    /// Why the connection must close, when a caller found out.
    fatal: Option<Fatal>,
    next_id: u64,
    /// Jobs written since the FIFO was last empty.
    period_jobs: u32,
    /// The last stretch of the FIFO being busy carried one job (a lone caller's): only
    /// then does the next request take the direct path. Under concurrency the FIFO
    /// carries many, and requests are queued to share writes.
    lone: bool,
    /// The classic protocol's writer holds a job until nothing is in flight
    /// ([`write_loop`]): the connection is not idle for a direct caller meanwhile, and the
    /// task is woken when it clears ([`Conn::note`]).
    writer_waits: bool,
}

/// The read side: the socket's read half and the decoding state of the reply being read.
struct ReadSide {
    /// `None` once the connection is closed.
    reader: Option<ReadHalf>,
    buf: ReadBuf,
    /// The decoder of the reply being read, when `decoding`; kept from reply to reply.
    decoder: Decoder,
    /// A reply is being read (its first bytes have arrived).
    decoding: bool,
    /// While a job is held ([`State::held`]) when the reply being read began: the opaque
    /// token that reply must carry, if its step has one. The held job is released as soon
    /// as that reply has begun as its request's reply begins ([`Conn::release_begun`]),
    /// not only once it is whole.
    held_check: Option<Option<u32>>,
    /// When bytes last arrived, for the task's measure of a hung server (a direct
    /// caller's read that completes its reply is not stamped: it reads no clock).
    last_read: Instant,
    /// When the idle connection was last looked at before a request went out on it
    /// ([`nothing_waiting`]).
    looked: Instant,
}

/// What [`Conn::pump`] came to.
enum Pumped {
    /// The connection must close.
    Fatal(Fatal),
    /// The job it was asked to wait for is answered.
    Answered,
    /// Bytes were read and nothing more can be now (time to look at the deadlines again).
    Read,
    /// The task does not own the reading (any more), or the connection failed meanwhile.
    Recheck,
}

/// A connection, shared by its task and its handles.
struct Conn {
    hints: Hints,
    state: Mutex<State>,
    read: Mutex<ReadSide>,
    settings: Settings,
}

/// What every request reads before anything else, on a cache line of its own (away from
/// the locks the connection's task takes for every reply).
#[repr(align(128))]
struct Hints {
    /// Closed, or failed: no new request may use it.
    dead: AtomicBool,
    /// Mirrors `State::unfinished.is_some()`, for the writer's wait.
    has_unfinished: AtomicBool,
    /// Kept under the state lock ([`Conn::note`]): nothing is in flight, being written or
    /// read by a caller, after a lone caller's use. Requests that find it false queue
    /// without taking a lock.
    idle: AtomicBool,
    /// A request written (or queued) on it lost its caller before its reply: a timeout or
    /// a dropped future ([`Conn::mark_abandoned`]). Cleared once nothing is in flight.
    abandoned: AtomicBool,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, State> {
        relock(&self.state)
    }

    fn lock_read(&self) -> MutexGuard<'_, ReadSide> {
        relock(&self.read)
    }

    /// Updates the idle hint after a change of the state.
    fn note(&self, st: &State) {
        let idle = st.lone
            && st.fifo.is_empty()
            && st.held.is_none()
            && st.owner == Owner::Task
            && !st.writing
            && st.unfinished.is_none()
            && st.fatal.is_none()
            && !st.writer_waits;
        // Stored only when it changes: every request reads it.
        if self.hints.idle.load(Ordering::Relaxed) != idle {
            self.hints.idle.store(idle, Ordering::Release);
        }
        // Nothing in flight any more, or nothing ever again.
        let cleared = st.clear() || st.fatal.is_some();
        if cleared && self.hints.abandoned.load(Ordering::Relaxed) {
            self.clear_abandoned();
        }
        if cleared && st.writer_waits {
            if let Some(task) = &st.task_waker {
                task.wake_by_ref();
            }
        }
    }

    /// Notes that `who` gave up on a request on this connection (`handle`'s) while it may
    /// have been written: until nothing is in flight here, `who`'s requests to the server
    /// go on this connection, behind it ([`Abandoned`]).
    pub(super) fn mark_abandoned(&self, who: Who, handle: &Handle) {
        self.hints.abandoned.store(true, Ordering::Release);
        self.settings.abandoned.note(who, self.id(), handle);
    }

    /// Nothing abandoned is in flight any more (or the connection failed).
    fn clear_abandoned(&self) {
        if self.hints.abandoned.swap(false, Ordering::AcqRel) {
            self.settings.abandoned.forget(self.id());
        }
    }

    /// The connection's identity in [`Abandoned`]'s list: its address.
    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Whether the connection is past its [`Conn::deadline`] with replies owed: the
    /// reader's test for a hung server ([`read_loop`]).
    fn overdue(&self) -> bool {
        let since = {
            let st = self.lock();
            if st.fifo.is_empty() {
                return false;
            }
            st.busy_since
        };
        let now = Instant::now();
        if now < since + self.settings.read_timeout {
            return false;
        }
        now >= self.deadline(since)
    }

    /// When a connection owing replies since `since` ([`State::busy_since`]) is given up
    /// on: nothing read for the read timeout (a hung server), or the awaited reply not
    /// whole within two. The caller whose request it was fails after one read timeout,
    /// and the connection is kept while its reply still comes in, so that a slow reply does
    /// not fail the requests behind it; but bytes that trickle in without completing it
    /// are not kept up with forever: a reply sent one byte every 50 ms held the connection,
    /// every request on it timing out, for as long as it lasted (an outside audit: 10 s).
    fn deadline(&self, since: Instant) -> Instant {
        // The read side's lock is taken before the state's, never under it.
        let last_read = self.lock_read().last_read;
        let timeout = self.settings.read_timeout;
        (since.max(last_read) + timeout).min(since + timeout * 2)
    }

    /// Marks the connection failed: every job in flight fails with `fatal`, the direct
    /// caller (if any) and the task are woken, and no new request uses it.
    fn fail(&self, fatal: &Fatal) {
        self.hints.dead.store(true, Ordering::Release);
        let (failed, direct, task) = {
            let mut st = self.lock();
            if st.fatal.is_none() {
                st.fatal = Some(fatal.clone());
            }
            st.owner = Owner::Task;
            let held = st.held.take();
            let failed: Vec<Pending> = held.into_iter().chain(st.fifo.drain(..)).collect();
            let channels: Vec<_> = failed
                .into_iter()
                .filter_map(|pending| {
                    let error = Err(Failure::Failed(fatal.error(&self.settings.label)));
                    st.answer(pending.id, pending.reply, error)
                })
                .collect();
            self.note(&st);
            (channels, st.direct_waker.take(), st.task_waker.clone())
        };
        for (reply, error) in failed {
            let _ = reply.send(error);
        }
        if let Some(w) = direct {
            w.wake();
        }
        if let Some(w) = task {
            w.wake();
        }
    }

    /// Reads and decodes all it can now, handing each complete reply to the oldest job
    /// in the FIFO ([`Conn::complete`]). With `until`, stops as soon as that job is
    /// answered; else returns [`Pumped::Read`] when it read anything before the socket
    /// had no more. `Pending` (the waker registered) when nothing could be read.
    fn pump(&self, rs: &mut ReadSide, cx: &mut Context<'_>, until: Option<u64>) -> Poll<Pumped> {
        let wire = self.settings.wire;
        let ReadSide {
            reader,
            buf,
            decoder,
            decoding,
            last_read,
            held_check,
            ..
        } = rs;
        let Some(reader) = reader.as_mut() else {
            return Poll::Ready(Pumped::Fatal(Fatal::Closed));
        };
        let mut read_any = false;
        let mut emptied = false;
        // A direct caller read bytes not yet stamped in `last_read`.
        let mut unstamped = false;
        // The reads a direct caller made past the runtime's `Pending`.
        let mut read_past_pending = 0;
        loop {
            loop {
                if !*decoding {
                    if buf.filled().is_empty() {
                        break;
                    }
                    let (readied, held) = {
                        let st = self.lock();
                        let step = st.fifo.front().and_then(|p| p.steps.get(p.next));
                        let readied = step.map(|step| step.ready(decoder, wire)).is_some();
                        let held = st.held.is_some().then(|| step.and_then(|s| s.opaque(wire)));
                        (readied, held)
                    };
                    *held_check = held;
                    if !readied {
                        return Poll::Ready(Pumped::Fatal(unasked(buf.filled())));
                    }
                    *decoding = true;
                }
                let d = &mut *decoder;
                let parsed = match d.decode(buf.filled()) {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        return Poll::Ready(Pumped::Fatal(Fatal::Protocol(format!(
                            "unparsable reply: {}",
                            e.0
                        ))))
                    }
                };
                buf.consume(d.consumed());
                if parsed.is_none() && d.consumed() > 0 {
                    if let Some(expected) = *held_check {
                        match (expected, d.tag().opaque()) {
                            (Some(want), Some(got)) if want != got => {
                                return Poll::Ready(Pumped::Fatal(Fatal::Protocol(format!(
                                    "a reply tagged {got} began where the reply tagged {want} was due; the connection was closed"
                                ))))
                            }
                            // A meta reply whose tag is not read yet: checked when whole;
                            // and one with no tag proves nothing (a classic `gets` of a
                            // later multi-get begins as the one awaited does: a review).
                            (Some(_), None) | (None, _) => {}
                            (Some(_), Some(_)) => {
                                *held_check = None;
                                if let Some(id) = self.release_begun() {
                                    if until == Some(id) {
                                        return Poll::Ready(Pumped::Answered);
                                    }
                                }
                            }
                        }
                    }
                }
                let Some(reply) = parsed else {
                    // A direct caller's read that left its reply incomplete: bytes are
                    // coming, and the task, should it take the reading over, gives the
                    // server the read timeout from here (a read that completes the reply
                    // reads no clock).
                    if unstamped {
                        *last_read = Instant::now();
                        unstamped = false;
                    }
                    break;
                };
                // The tag is read where it lies (it holds a key of up to 250 bytes). The
                // read ended right after this reply when nothing is left of it.
                let ends_read = buf.filled().is_empty();
                let completed = self.complete(reply, d.tag(), ends_read);
                *decoding = false;
                match completed {
                    Err(fatal) => return Poll::Ready(Pumped::Fatal(fatal)),
                    Ok(answered) if until.is_some() && answered.contains(&until) => {
                        return Poll::Ready(Pumped::Answered)
                    }
                    Ok(_) => {}
                }
            }
            let direct = *decoding && decoder.value_spare().is_some_and(|v| v.len() >= READ_BUF);
            let mut offered = 0;
            let target = if direct {
                let Some(value) = decoder.value_spare() else {
                    continue;
                };
                value
            } else {
                let spare = buf.spare();
                offered = spare.len();
                spare
            };
            let polled = match reader.poll_read_into(cx, target) {
                // The runtime takes a short read for an empty socket and waits for its next
                // readiness; but a caller's reply that has begun to arrive is often whole
                // already (memcached writes a multi-get's closing tag apart from its values,
                // a moment later). So the caller reads on until the socket is really empty:
                // its reply is in a turn of `epoll_wait` sooner, and the wake-up the rest's
                // arrival queued is spent while the server works on its next request. (The
                // waker is registered: when this read finds nothing, the wait goes on.)
                // At most so many: a server that keeps sending (a reply that never ends)
                // kept the caller in this loop, past its timeout and the runtime's budget
                // (an outside audit: a `stats` reply of endless lines, 1 GB in 6 s). Then it
                // yields, woken at once, and its timeout is looked at.
                Poll::Pending if until.is_some() && read_past_pending >= MAX_READS_PAST_PENDING => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Pending if until.is_some() && read_any && !emptied => {
                    read_past_pending += 1;
                    match reader.read_now(target) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            emptied = true;
                            Poll::Pending
                        }
                        got => Poll::Ready(got),
                    }
                }
                polled => polled,
            };
            match polled {
                Poll::Pending => {
                    return if read_any && until.is_none() {
                        Poll::Ready(Pumped::Read)
                    } else {
                        Poll::Pending
                    };
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Pumped::Fatal(Fatal::io(&e))),
                Poll::Ready(Ok(0)) => {
                    let busy = {
                        let st = self.lock();
                        !st.fifo.is_empty() || st.held.is_some()
                    };
                    return Poll::Ready(Pumped::Fatal(
                        if busy && !*decoding && buf.filled().is_empty() {
                            Fatal::ClosedWithoutReply
                        } else if busy || *decoding || !buf.filled().is_empty() {
                            Fatal::Io(
                                io::ErrorKind::UnexpectedEof,
                                "the server closed the connection with replies still due".into(),
                            )
                        } else {
                            Fatal::Closed
                        },
                    ));
                }
                Poll::Ready(Ok(n)) => {
                    read_any = true;
                    if until.is_none() {
                        *last_read = Instant::now();
                    } else {
                        unstamped = true;
                    }
                    if direct {
                        decoder.value_filled(n);
                    } else {
                        buf.filled_by(n, offered);
                    }
                }
            }
        }
    }

    /// The task's turn at [`Conn::pump`], when it owns the reading.
    fn pump_as_task(&self, cx: &mut Context<'_>) -> Poll<Pumped> {
        let mut rs = self.lock_read();
        {
            let st = self.lock();
            if let Some(fatal) = &st.fatal {
                return Poll::Ready(Pumped::Fatal(fatal.clone()));
            }
            if st.owner != Owner::Task {
                return Poll::Ready(Pumped::Recheck);
            }
        }
        self.pump(&mut rs, cx, None)
    }

    /// Gives a complete reply to the step the oldest job awaits. A reply that answers its
    /// request releases the job held before it ([`State::held`]); a job whose last reply
    /// this is is held in turn, unless the read ended right after it (`ends_read`: nothing
    /// follows it to check) or an error line closed it (the connection closes after it).
    /// Returns the numbers of the jobs answered (the one held before, this reply's). `Err`
    /// when the connection must close.
    fn complete(
        &self,
        reply: Reply,
        tag: &meta::Tag,
        ends_read: bool,
    ) -> Result<[Option<u64>; 2], Fatal> {
        let settings = &self.settings;
        let mut state = self.lock();
        let Some(front) = state.fifo.front_mut() else {
            return Err(Fatal::Protocol(
                "a reply arrived with no request awaiting it; the connection was closed".into(),
            ));
        };
        let Some(step) = front.steps.get_mut(front.next) else {
            return Err(Fatal::Protocol("a job with no step left".into()));
        };
        let tagged = step.opaque(settings.wire).is_some();
        match step.take(reply, tag, settings.wire) {
            Err(detail) => {
                return Err(Fatal::Protocol(format!(
                    "the reply does not answer its request ({detail}); the connection was closed"
                )))
            }
            Ok(Taken::Answer(answer)) => {
                if let Some(answer) = answer {
                    front.answers.push(answer);
                }
                front.next += 1;
            }
            Ok(Taken::Refused(status)) => {
                // After an error line the classic protocol cannot tell whether the server is
                // still reading what it refused; meta replies carry tags, so the connection
                // goes on, unless the server no longer knows meta (`ERROR`).
                if settings.wire == Wire::Classic || status == Status::Error {
                    front.close_after = true;
                }
                if settings.wire == Wire::Meta && status == Status::Error && settings.reprobe {
                    settings.server_wire.store(WIRE_UNKNOWN, Ordering::Relaxed);
                }
                front
                    .answers
                    .push(Answer::Outcome(Outcome::Refused(status)));
                front.next += 1;
            }
            Ok(Taken::More) => {}
            Ok(Taken::RefusedMore(status)) => {
                front
                    .answers
                    .push(Answer::Line(Box::new(Reply::Status(status))));
                front.close_after = true;
            }
            Ok(Taken::Stop(status)) => {
                front
                    .answers
                    .push(Answer::Line(Box::new(Reply::Status(status))));
                front.close_after = true;
                front.next = front.steps.len();
            }
        }
        let finished = front.next >= front.steps.len();
        // This reply answers its request: the bytes after the held job's last reply were
        // in step. Unless it has no tag and its job goes on (a multi-get's `gets`, whose
        // `END` a later multi-get's could stand for): then its job's tagged closing reply
        // tells (a review).
        let before = if tagged || finished {
            self.release(&mut state)
        } else {
            None
        };
        // Progress: the next reply's wait starts now.
        let more = !finished || state.fifo.len() > 1;
        if more {
            state.busy_since = Instant::now();
        }
        let mut done = None;
        if finished {
            if let Some(job) = state.fifo.pop_front() {
                if state.fifo.is_empty() {
                    state.lone = state.period_jobs <= 1;
                    state.period_jobs = 0;
                }
                let close_after = job.close_after;
                state.held = Some(job);
                // Held until the bytes after it check out: the next reply begins as its
                // request's reply begins (`release_begun`), or, with nothing else in
                // flight, the read ended right after it. A read that ended there with
                // replies still owed proves nothing for a value that may hold those
                // replies (`may_hold_a_reply`): a value cut short by exactly their length
                // takes them in, ends where the read ended, and was handed over holding
                // them (an outside audit: 5 of 14 such cuts reached a caller). Any other
                // reply is answered at once.
                let may_hold = || {
                    let wire = settings.wire;
                    let next = state.fifo.front().and_then(|p| p.steps.get(p.next));
                    let token = next.and_then(|step| step.opaque(wire));
                    let owed = |t: u32| {
                        state
                            .fifo
                            .iter()
                            .any(|p| p.steps.iter().skip(p.next).any(|step| step.owes(t, wire)))
                    };
                    state
                        .held
                        .as_ref()
                        .is_some_and(|j| may_hold_a_reply(&j.answers, token, owed))
                };
                if close_after || (ends_read && (state.fifo.is_empty() || !may_hold())) {
                    done = self.release(&mut state);
                } else {
                    self.note(&state);
                }
            }
        }
        drop(state);
        let before = before.map(Released::deliver);
        let closes = done.as_ref().is_some_and(|d| d.closes);
        let done = done.map(Released::deliver);
        if closes {
            return Err(Fatal::Protocol(
                "the connection was closed after an error line to an earlier request on it".into(),
            ));
        }
        Ok([before, done])
    }

    /// Answers the held job once the reply after it has begun as it should (its first line
    /// parsed, and in meta its token the one awaited): the held job's bytes ended where a
    /// reply begins. Its number, when there was one.
    fn release_begun(&self) -> Option<u64> {
        let released = {
            let mut state = self.lock();
            self.release(&mut state)
        }?;
        // (A job that closes the connection is never held: it is answered at once.)
        Some(released.deliver())
    }

    /// Answers the held job ([`State::held`]), if any: its result, and the direct caller's
    /// waker when the task read it, to hand over once the state is unlocked.
    fn release(&self, state: &mut State) -> Option<Released> {
        let done = state.held.take()?;
        // A direct caller's answer read by the task (it took the reading back): the caller
        // is woken for it.
        let wake = match done.reply {
            ReplyTo::Caller if state.owner != Owner::Direct(done.id) => state.direct_waker.take(),
            _ => None,
        };
        let send = state.answer(done.id, done.reply, Ok(done.answers));
        self.note(state);
        Some(Released {
            id: done.id,
            closes: done.close_after,
            send,
            wake,
        })
    }
}

/// A job's answer released from [`State::held`], to hand over with the state unlocked.
struct Released {
    id: u64,
    /// The connection closes after this job (an error line).
    closes: bool,
    send: Option<(oneshot::Sender<JobResult>, JobResult)>,
    wake: Option<Waker>,
}

impl Released {
    /// Sends the answer and wakes its caller; the job's number.
    fn deliver(self) -> u64 {
        if let Some((reply, result)) = self.send {
            let _ = reply.send(result);
        }
        if let Some(w) = self.wake {
            w.wake();
        }
        self.id
    }
}

/// The caller's side of a connection: its queue, dialect and opaque tokens (one
/// reference count to clone per request).
#[derive(Clone)]
pub(super) struct Handle(Arc<Caller>);

/// What a [`Handle`] holds.
pub(super) struct Caller {
    pub(super) tx: mpsc::Sender<Job>,
    pub(super) wire: Wire,
    opaque: AtomicU32,
    conn: Arc<Conn>,
}

impl std::ops::Deref for Handle {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("server", &self.conn.settings.label)
            .field("wire", &self.wire)
            .field("open", &self.is_open())
            .finish()
    }
}

impl Handle {
    /// The error its connection failed with, when that is one a job not sent must report
    /// ([`Fatal::unsent`]: a TLS failure).
    pub(super) fn unsent_error(&self) -> Option<Error> {
        let st = self.conn.lock();
        match st.fatal.as_ref()?.unsent(&self.conn.settings.label) {
            Failure::Failed(e) => Some(e),
            Failure::NotSent => None,
        }
    }

    /// True until the connection closed (or failed).
    pub(super) fn is_open(&self) -> bool {
        !self.tx.is_closed() && !self.conn.hints.dead.load(Ordering::Acquire)
    }

    /// Nothing is in flight or waits to be written on it (and it is open).
    pub(super) fn is_idle(&self) -> bool {
        self.conn.hints.idle.load(Ordering::Acquire) && self.is_open()
    }

    /// The calling task (or thread) gave up on a request on this connection
    /// ([`Conn::mark_abandoned`]).
    pub(super) fn mark_abandoned(&self) {
        self.conn.mark_abandoned(Who::now(), self);
        // Its job may have been answered already, nothing left in flight: the note then
        // stayed until the connection's next request, and the handle in it kept the
        // connection and its task open after the transport was dropped (an outside audit:
        // 2.8% of caches dropped after cancelled calls, for good with `idle_timeout=0`).
        let st = self.conn.lock();
        if st.clear() || st.fatal.is_some() {
            self.conn.clear_abandoned();
        }
    }

    /// `n` opaque tokens in a row; the first is returned.
    pub(super) fn reserve(&self, n: usize) -> u32 {
        self.opaque
            .fetch_add(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed)
    }
}

/// A caller's wait for a job's answer on a connection: dropped before
/// [`Awaiting::answered`] (the caller timed out, or its future was dropped), it marks the
/// connection abandoned ([`Conn::mark_abandoned`]).
pub(super) struct Awaiting(Option<Handle>);

impl Awaiting {
    /// The wait for a job sent (or queued) on `handle`'s connection.
    pub(super) fn on(handle: &Handle) -> Awaiting {
        Awaiting(Some(handle.clone()))
    }

    /// The job was answered, or failed with its connection, or was not sent: nothing of
    /// it is left in flight.
    pub(super) fn answered(&mut self) {
        self.0 = None;
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.mark_abandoned();
        }
    }
}

/// Starts the connection's task on `runtime`; its tokens start at `first_opaque`.
pub(super) fn start(
    runtime: &tokio::runtime::Handle,
    reader: ReadHalf,
    writer: WriteHalf,
    settings: Settings,
    first_opaque: u32,
) -> Handle {
    let (tx, rx) = mpsc::channel(settings.queue.max(1));
    settings
        .counters
        .connections
        .fetch_add(1, Ordering::Relaxed);
    let wire = settings.wire;
    let now = Instant::now();
    let conn = Arc::new(Conn {
        state: Mutex::new(State {
            fifo: VecDeque::new(),
            held: None,
            busy_since: now,
            closing: false,
            owner: Owner::Task,
            direct_waker: None,
            direct_result: None,
            task_waker: None,
            writer: Some(Arc::new(writer)),
            writing: false,
            unfinished: None,
            fatal: None,
            next_id: 0,
            period_jobs: 0,
            lone: true,
            writer_waits: false,
        }),
        read: Mutex::new(ReadSide {
            reader: Some(reader),
            buf: ReadBuf::new(),
            decoder: Decoder::new(Expect::Status),
            decoding: false,
            held_check: None,
            last_read: now,
            looked: now,
        }),
        hints: Hints {
            dead: AtomicBool::new(false),
            has_unfinished: AtomicBool::new(false),
            idle: AtomicBool::new(true),
            abandoned: AtomicBool::new(false),
        },
        settings,
    });
    let handle = Handle(Arc::new(Caller {
        tx,
        wire,
        opaque: AtomicU32::new(first_opaque),
        conn: conn.clone(),
    }));
    runtime.spawn(run(rx, conn));
    handle
}

/// The connection's task: writer and reader side by side until either fails (or a
/// direct caller found the connection failed), then every job written fails with that
/// error, every job still queued is answered [`Failure::NotSent`], and the socket closes.
async fn run(mut rx: mpsc::Receiver<Job>, conn: Arc<Conn>) {
    let _ends = EndsWithTask(conn.clone());
    let waker = poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
    {
        let mut st = conn.lock();
        st.task_waker = Some(waker);
    }
    // The jobs the writer took and has not written yet: the task answers them itself when
    // the reader fails meanwhile (a dropped reply would read as "may have run").
    let mut batch: Vec<Job> = Vec::new();
    // The writer first: what it writes behind a direct caller is read in the same turn.
    let fatal = tokio::select! {
        biased;
        f = write_loop(&mut rx, &conn, &mut batch) => f,
        f = read_loop(&conn) => f,
    };
    conn.fail(&fatal);
    rx.close();
    conn.lock_read().reader = None;
    {
        let mut st = conn.lock();
        st.writer = None;
        st.task_waker = None;
        st.direct_waker = None;
    }
    for job in batch.drain(..) {
        job.reply.send(Err(fatal.unsent(&conn.settings.label)));
    }
    while let Ok(job) = rx.try_recv() {
        job.reply.send(Err(fatal.unsent(&conn.settings.label)));
    }
}

/// Fails its connection when the connection's task is dropped before it ended on its own
/// (its runtime shut down): the jobs written on it fail at once, not after their read
/// timeout, and a caller reading it directly, on another runtime, is woken to find it
/// failed (its socket's readiness came from the runtime that is gone: an outside audit's
/// first call after `shutdown_background` timed out). The jobs still queued are answered
/// "not sent" as they drop ([`JobReply`]).
struct EndsWithTask(Arc<Conn>);

/// Why a job written on a connection whose task ended without answering it failed.
pub(super) const TASK_ENDED: &str = "the connection's task ended (its tokio runtime shut down) \
     before answering; the request may or may not have run, so it was not sent again";

impl Drop for EndsWithTask {
    fn drop(&mut self) {
        // After the task's own ending this finds nothing left to fail.
        self.0.fail(&Fatal::Io(
            io::ErrorKind::ConnectionAborted,
            TASK_ENDED.to_string(),
        ));
    }
}

/// Reads replies as they arrive while the task owns the reading, decodes each with the
/// decoder of the step the oldest job in the FIFO awaits, and checks it against that
/// step: a reply that does not answer it, or any byte when nothing is in flight, closes
/// the connection. While requests are in flight and nothing arrives for the read timeout,
/// the connection is closed (a hung server); idle, it is closed after the idle timeout, or
/// once its transport is gone. While a direct caller reads, it waits for the reading to
/// come back; when that caller has not finished within the read timeout, the caller
/// fails with a timeout and the task takes the reading back. This is the direct path's
/// only timer: the caller arms none of its own (a timer per request cost a few hundred
/// instructions of the runtime's timer wheel on every lone get, against a task that
/// wakes every quarter of the read timeout anyway).
async fn read_loop(conn: &Conn) -> Fatal {
    let settings = &conn.settings;
    let tick = (settings.read_timeout / 4).max(Duration::from_millis(5));
    loop {
        let (owner, busy, since, closing) = {
            let st = conn.lock();
            if let Some(fatal) = &st.fatal {
                return fatal.clone();
            }
            (st.owner, !st.fifo.is_empty(), st.busy_since, st.closing)
        };
        let now = Instant::now();
        if owner != Owner::Task {
            let limit = since + settings.read_timeout;
            if now >= limit {
                // No reply within the read timeout (a hung server), or the direct caller
                // is not reading (not polled, nor dropped): the caller fails with a
                // timeout, and the task reads from here on (the reply, if it comes, is
                // thrown away).
                let waker = {
                    let mut st = conn.lock();
                    if st.owner != owner {
                        continue;
                    }
                    st.owner = Owner::Task;
                    if let Owner::Direct(id) = owner {
                        time_out(&mut st, id, settings);
                    }
                    conn.note(&st);
                    st.direct_waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
                continue;
            }
            let wait = poll_fn(|_| {
                let st = conn.lock();
                if st.owner == Owner::Task || st.fatal.is_some() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            let _ = tokio::time::timeout_at(limit.min(now + tick), wait).await;
            continue;
        }
        let deadline = if busy {
            conn.deadline(since)
        } else {
            let active = since.max(conn.lock_read().last_read);
            if closing {
                return Fatal::Closed;
            }
            if !settings.idle_timeout.is_zero() && now >= active + settings.idle_timeout {
                return Fatal::Closed;
            }
            now + tick
        };
        match tokio::time::timeout_at(deadline, poll_fn(|cx| conn.pump_as_task(cx))).await {
            Ok(Pumped::Fatal(fatal)) => return fatal,
            Ok(Pumped::Read | Pumped::Recheck | Pumped::Answered) => {}
            Err(_) if busy => return Fatal::Timeout(settings.read_timeout),
            Err(_) => {}
        }
    }
}

/// Fails job `id`, still awaiting its reply, with a timeout: its caller is answered now,
/// and the reply, read when it comes, goes nowhere.
fn time_out(st: &mut State, id: u64, settings: &Settings) {
    let Some(job) = st.in_flight(id) else {
        return;
    };
    let error = Err(Failure::Failed(
        Fatal::Timeout(settings.read_timeout).error(&settings.label),
    ));
    let reply = std::mem::replace(&mut job.reply, ReplyTo::Nowhere);
    if let Some((reply, error)) = st.answer(id, reply, error) {
        let _ = reply.send(error);
    }
}

/// The error for bytes that arrived with no request awaiting them.
fn unasked(bytes: &[u8]) -> Fatal {
    // memcached over its connection limit writes its refusal on a connection it accepts,
    // before any request (`ERROR Too many open connections`): the server's own failure,
    // which the requests waiting for the connection fail with, not sent elsewhere.
    if let Some(line) = bytes
        .strip_suffix(b"\r\n")
        .filter(|l| l.starts_with(b"ERROR "))
    {
        if let Ok(Status::ServerError(message)) = crate::proto::parse_status(line) {
            return Fatal::Server(message);
        }
    }
    let shown = bytes.get(..bytes.len().min(40)).unwrap_or_default();
    Fatal::Protocol(format!(
        "{} bytes arrived with no request awaiting a reply ({:?}...); the connection was closed",
        bytes.len(),
        String::from_utf8_lossy(shown)
    ))
}
