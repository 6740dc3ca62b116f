//! The direct path of a lone caller: on an idle connection last used by one caller at a
//! time, the caller writes its request and reads its reply itself, in its own task, with
//! no hand-off to the connection's task (see [who reads](super)).

use std::future::poll_fn;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::TryLockError;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use newcache_transport::Error;
use tokio::sync::{mpsc, oneshot};

use super::{
    nothing_waiting, Awaiting, Conn, Failure, Fatal, Handle, Job, JobResult, Owner, Pumped,
    ReplyTo, Settings, State, Who,
};
use crate::tokio_transport::steps::Steps;

impl Conn {
    /// The direct path's start: when the connection is idle, the job enters the FIFO, the
    /// caller becomes the owner of the reading, and its bytes are written at once (all
    /// under the state lock, so nothing is written in between); else the job is given back.
    fn start_direct(
        &self,
        waker: &Waker,
        queue: &mpsc::Sender<Job>,
        bytes: Vec<u8>,
        steps: Steps,
    ) -> Start {
        if steps.is_empty()
            || !self.hints.idle.load(Ordering::Acquire)
            || queue.capacity() < queue.max_capacity()
            || self.hints.dead.load(Ordering::Acquire)
            || self.hints.has_unfinished.load(Ordering::Acquire)
        {
            return Start::Busy(bytes, steps);
        }
        // With nothing in flight, whoever holds the read side holds it only for a read that
        // finds nothing (or bytes nobody asked for): waiting for it is short. With anything
        // in flight the request is queued without waiting.
        // (The state lock is never held while the read side's is taken: the order is read
        // side, then state.)
        let quiet = || {
            let st = self.lock();
            st.fifo.is_empty() && !st.writing && st.owner == Owner::Task
        };
        let mut rs = match self.read.try_lock() {
            Ok(rs) => rs,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                if !quiet() {
                    return Start::Busy(bytes, steps);
                }
                self.lock_read()
            }
        };
        let mut st = self.lock();
        let idle = st.fatal.is_none()
            && st.lone
            && !st.closing
            && st.owner == Owner::Task
            && st.fifo.is_empty()
            && !st.writing
            && st.unfinished.is_none()
            && st.direct_result.is_none()
            && !st.writer_waits
            && !rs.decoding
            && rs.buf.filled().is_empty();
        let writer = match st.writer.clone() {
            Some(writer) if idle => writer,
            _ => return Start::Busy(bytes, steps),
        };
        // Anything that arrived while the connection was idle was not asked for. This costs
        // no system call unless the runtime saw the socket readable, and registers no waker:
        // the caller's first poll for its reply does (readiness that comes in between is
        // kept by the runtime, not lost).
        match nothing_waiting(&mut rs) {
            Ok(true) => {}
            Ok(false) => return Start::Busy(bytes, steps),
            Err(fatal) => {
                drop(st);
                drop(rs);
                self.fail(&fatal);
                return match fatal.unsent(&self.settings.label) {
                    Failure::NotSent => Start::NotSent,
                    failed => Start::Failed(Err(failed)),
                };
            }
        }
        // The FIFO is empty (the connection is idle): the reply's wait starts now.
        let id = st.enter(steps, ReplyTo::Caller);
        self.hints.idle.store(false, Ordering::Release);
        st.owner = Owner::Direct(id);
        st.direct_waker = Some(waker.clone());
        let counters = &self.settings.counters;
        counters.jobs.fetch_add(1, Ordering::Relaxed);
        counters.direct.fetch_add(1, Ordering::Relaxed);
        let written = match writer.try_write(&bytes) {
            Ok(n) => n,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                0
            }
            Err(e) => {
                drop(st);
                drop(rs);
                return Start::Failed(self.fail_direct(&Fatal::io(&e), id));
            }
        };
        if written > 0 {
            counters.writes.fetch_add(1, Ordering::Relaxed);
        }
        if written >= bytes.len() {
            drop(st);
            drop(rs);
            crate::tokio_transport::spare::give_back(bytes);
            return Start::Sent(id);
        }
        // The socket did not take it whole: the task writes the rest before anything else,
        // and reads the reply; the caller waits for it as a queued caller does.
        let (reply, rx) = oneshot::channel();
        if let Some(job) = st.fifo.back_mut() {
            job.reply = ReplyTo::Channel(reply);
        }
        st.unfinished = Some((bytes, written));
        self.hints.has_unfinished.store(true, Ordering::Release);
        st.owner = Owner::Task;
        st.direct_waker = None;
        let task = st.task_waker.clone();
        drop(st);
        drop(rs);
        if let Some(w) = task {
            w.wake();
        }
        Start::Handed(rx)
    }
}

/// How [`Conn::start_direct`] went.
enum Start {
    /// The connection was not idle: the request, untouched, to queue instead.
    Busy(Vec<u8>, Steps),
    /// The connection turned out closed (or fed unasked bytes) before anything was
    /// written: it was failed, and the request may go on another.
    NotSent,
    /// Written whole: the caller reads its reply (the job's number).
    Sent(u64),
    /// Written in part: the task writes the rest and reads the reply, sent by the channel.
    Handed(oneshot::Receiver<JobResult>),
    /// The write failed: the job's result.
    Failed(JobResult),
}

/// What a request on the direct path came to ([`Handle::direct`]).
pub(in crate::tokio_transport) enum Direct {
    /// The connection was not idle: the request, untouched, to queue instead.
    Busy(Vec<u8>, Steps),
    /// Answered, or failed.
    Done(JobResult),
    /// No answer within the deadline (the connection goes on, and reads the reply).
    TimedOut,
}

/// A direct caller's wait for its reply. Dropped while it owns the reading (cancelled or
/// timed out), it gives the reading back to the task, which reads the reply (and any part
/// of it already read) and throws it away.
struct DirectCall<'a> {
    conn: &'a Conn,
    handle: &'a Handle,
    id: u64,
}

impl DirectCall<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<JobResult> {
        let conn = self.conn;
        let mut rs = conn.lock_read();
        {
            let mut st = conn.lock();
            if st.owner != Owner::Direct(self.id) {
                // The task reads now (or the connection failed, or the call timed out):
                // the result is in the state, or comes there.
                drop(rs);
                if let Some(result) = take_result(&mut st, self.id) {
                    return Poll::Ready(result);
                }
                if st.in_flight(self.id).is_none() {
                    return Poll::Ready(Err(Failure::Failed(gone(&conn.settings))));
                }
                st.direct_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            if !st
                .direct_waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                st.direct_waker = Some(cx.waker().clone());
            }
        }
        match conn.pump(&mut rs, cx, Some(self.id)) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Pumped::Answered) => {
                drop(rs);
                Poll::Ready(self.hand_back())
            }
            Poll::Ready(Pumped::Fatal(fatal)) => {
                drop(rs);
                Poll::Ready(conn.fail_direct(&fatal, self.id))
            }
            Poll::Ready(Pumped::Read | Pumped::Recheck) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    /// Gives the reading back to the task, if this call still owns it (false when the
    /// task took it back already, or the connection failed).
    fn give_back(&self, st: &mut State) -> bool {
        if st.owner != Owner::Direct(self.id) {
            return false;
        }
        st.owner = Owner::Task;
        st.direct_waker = None;
        self.conn.note(st);
        true
    }

    /// After its reply: the job's result, and the task owns the reading again, woken
    /// when jobs were written behind this one, to read their replies. With nothing in
    /// flight it is not woken, nor registered for the socket: bytes that arrive on the
    /// idle connection (nobody asked for them) are found by the next direct caller before
    /// it writes ([`Conn::start_direct`]), or by the task at its next turn (within a
    /// quarter of the read timeout), and either closes the connection. (Registering the
    /// task here cost a readiness poll and a waker clone on every lone get.)
    fn hand_back(&self) -> JobResult {
        let mut st = self.conn.lock();
        let result = result_or_gone(&mut st, self.id, &self.conn.settings);
        if !self.give_back(&mut st) || st.fifo.is_empty() {
            return result;
        }
        let task = st.task_waker.clone();
        drop(st);
        if let Some(task) = task {
            task.wake();
        }
        result
    }
}

impl Drop for DirectCall<'_> {
    /// A call dropped before its result gives the reading back (if it still has it),
    /// and its result, now or to come, goes nowhere, so that no result waits in the state
    /// for a caller that left (which would keep later calls off the direct path).
    fn drop(&mut self) {
        let task = {
            let mut st = self.conn.lock();
            if st
                .direct_result
                .as_ref()
                .is_some_and(|(id, _)| *id == self.id)
            {
                st.direct_result = None;
            }
            if let Some(job) = st.in_flight(self.id) {
                job.reply = ReplyTo::Nowhere;
                self.conn.mark_abandoned(Who::now(), self.handle);
            }
            if !self.give_back(&mut st) {
                return;
            }
            st.task_waker.clone()
        };
        if let Some(w) = task {
            w.wake();
        }
    }
}

/// The result of direct job `id`, when the state holds it (the caller's waker is
/// forgotten with it).
fn take_result(st: &mut State, id: u64) -> Option<JobResult> {
    match st.direct_result.take() {
        Some((at, result)) if at == id => {
            st.direct_waker = None;
            Some(result)
        }
        other => {
            st.direct_result = other;
            None
        }
    }
}

/// The result of direct job `id` ([`take_result`]), or the error of a job whose connection
/// went without answering it.
fn result_or_gone(st: &mut State, id: u64, settings: &Settings) -> JobResult {
    take_result(st, id).unwrap_or_else(|| Err(Failure::Failed(gone(settings))))
}

impl Conn {
    /// Fails the connection ([`Conn::fail`]), which answers direct job `id` with the
    /// failure, and returns that answer.
    fn fail_direct(&self, fatal: &Fatal, id: u64) -> JobResult {
        self.fail(fatal);
        result_or_gone(&mut self.lock(), id, &self.settings)
    }
}

/// The error of a job whose connection went without answering it.
fn gone(settings: &Settings) -> Error {
    Fatal::Closed.error(&settings.label)
}

impl Handle {
    /// The direct path: when the connection is idle, the caller writes its request and
    /// reads its reply itself, in its own task; else the request is given back
    /// ([`Direct::Busy`]) to be queued. Its reply is due within `timeout`: the
    /// connection's task fails the call when it is not in by then (see `read_loop`), and
    /// the caller stops waiting then whatever that task does.
    pub(in crate::tokio_transport) async fn direct(
        &self,
        bytes: Vec<u8>,
        steps: Steps,
        timeout: Duration,
    ) -> Direct {
        let conn = &*self.conn;
        if !conn.hints.idle.load(Ordering::Acquire) {
            return Direct::Busy(bytes, steps);
        }
        let waker = poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        match conn.start_direct(&waker, &self.tx, bytes, steps) {
            Start::Busy(bytes, steps) => Direct::Busy(bytes, steps),
            Start::NotSent => Direct::Done(Err(Failure::NotSent)),
            Start::Failed(result) => Direct::Done(result),
            Start::Handed(mut rx) => {
                let mut awaiting = Awaiting::on(self);
                match tokio::time::timeout(timeout, &mut rx).await {
                    Ok(Ok(result)) => {
                        awaiting.answered();
                        Direct::Done(result)
                    }
                    Ok(Err(_)) => {
                        awaiting.answered();
                        Direct::Done(Err(Failure::Failed(gone(&conn.settings))))
                    }
                    Err(_) => Direct::TimedOut,
                }
            }
            Start::Sent(id) => {
                let mut call = DirectCall {
                    conn,
                    handle: self,
                    id,
                };
                // The connection's task fails the call when its reply is late, but only
                // while its runtime runs it: a connection opened on a runtime that is kept
                // but no longer driven would leave this caller waiting for ever. So the
                // caller's own runtime bounds the wait too; a call that times out here is
                // dropped, its reply read and discarded when that task runs again.
                match tokio::time::timeout(timeout, poll_fn(|cx| call.poll(cx))).await {
                    Ok(result) => Direct::Done(result),
                    Err(_) => Direct::TimedOut,
                }
            }
        }
    }
}
