//! The connection task's writer: what is queued, gathered into one write (meta), or one
//! job at a time once nothing is in flight (classic; see [`write_loop`]).

use std::future::poll_fn;
use std::io;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{unasked, AnswerList, Conn, Failure, Fatal, Job, Owner, ReadSide};
use crate::connect::LOOK_AFTER_IDLE;

/// The most request bytes one write gathers from the queue (a job larger than this is
/// still written whole).
const WRITE_BATCH_MAX: usize = 1024 * 1024;

impl Conn {
    /// The classic protocol's writer's wait for `batch`'s job ([`write_loop`]): ready when
    /// nothing is in flight ([`State::clear`](super::State::clear)), when a direct caller's
    /// request waits to be written whole (the writer writes that alone), or when the job's
    /// caller left (it is dropped from `batch`); `Err` when the connection failed. While it waits, no direct
    /// caller starts, and the task is woken when the connection clears ([`Conn::note`]).
    fn poll_clear(&self, cx: &mut Context<'_>, batch: &mut Vec<Job>) -> Poll<Result<(), Fatal>> {
        batch.retain_mut(|job| job.reply.poll_closed(cx).is_pending());
        let mut st = self.lock();
        if let Some(fatal) = &st.fatal {
            return Poll::Ready(Err(fatal.clone()));
        }
        let was = st.writer_waits;
        st.writer_waits = !batch.is_empty();
        let ready = batch.is_empty() || st.clear() || st.unfinished.is_some();
        // The idle hint turns false as the wait starts, and true again if it ends with no
        // job left; a wait that ends with the job to write leaves it to the write.
        if was != st.writer_waits && !(ready && st.writer_waits) {
            self.note(&st);
        }
        if ready {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl Conn {
    /// With nothing in flight, whether nothing waits on the socket ([`nothing_waiting`]);
    /// `Ok(true)` with something in flight. The read side is locked before the state is
    /// looked at (the lock order), and held until the socket has been looked at, so no
    /// direct caller starts in between. One that did (the connection idle, the queue just
    /// emptied by this writer) had its reply taken for bytes nobody asked for, and the
    /// connection failed with every request on it (2 of 20 runs of eight threads sharing a
    /// meta connection, beside four busy loops).
    fn nothing_waiting_if_clear(&self) -> Result<bool, Fatal> {
        let mut rs = self.lock_read();
        if !self.lock().clear() {
            return Ok(true);
        }
        nothing_waiting(&mut rs)
    }
}

/// Takes everything queued (and the rest of a direct caller's request the socket did not
/// take whole, first) and writes it with one write, the jobs entering the FIFO first (in
/// the order written). A job whose caller left before it was written is dropped
/// unwritten (looked at under the lock jobs enter the FIFO by). Jobs written behind a
/// direct caller's take the reading back to the task. `batch` holds the jobs taken and not
/// yet written (in the FIFO), so that [`run`](super::run) answers them
/// [`Failure::NotSent`] if the reader fails while the writer waits.
///
/// In the classic protocol a reply carries no token: a stray or duplicated `STORED`,
/// number or `END` would pass for the answer of whatever request is next in the FIFO. So
/// there the writer takes one job at a time and writes it only once nothing is in flight
/// and no byte waits on the socket ([`Conn::poll_clear`], [`nothing_waiting`]), as the
/// blocking transport checks a pooled connection before it reuses it: a reply that comes with
/// nothing in flight closes the connection, never answering a later request.
/// The largest batch buffer a connection keeps between writes.
const KEEP_WRITE_BUF: usize = 64 << 10;

pub(super) async fn write_loop(
    rx: &mut mpsc::Receiver<Job>,
    conn: &Conn,
    batch: &mut Vec<Job>,
) -> Fatal {
    let settings = &conn.settings;
    let one_at_a_time = settings.serial;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if batch.is_empty() {
            let first = poll_fn(|cx| {
                if conn.hints.has_unfinished.load(Ordering::Acquire) {
                    return Poll::Ready(Some(None));
                }
                rx.poll_recv(cx).map(|job| job.map(Some))
            })
            .await;
            let Some(first) = first else {
                // Every handle is gone (the transport was dropped): with nothing in flight
                // the connection closes now; else the reader closes it once the replies
                // in flight are read (a dropped transport's connections stayed open until
                // the reader's next tick, a quarter of the read timeout).
                let idle = {
                    let mut st = conn.lock();
                    st.closing = true;
                    st.clear()
                };
                if idle {
                    return Fatal::Closed;
                }
                return std::future::pending::<Fatal>().await;
            };
            if let Some(job) = first {
                batch.push(job);
                if !one_at_a_time {
                    // Let the tasks that are ready queue their requests too, so they share
                    // this write.
                    tokio::task::yield_now().await;
                    let mut bytes = batch.first().map_or(0, |j| j.bytes.len());
                    while bytes < WRITE_BATCH_MAX {
                        match rx.try_recv() {
                            Ok(job) => {
                                bytes += job.bytes.len();
                                batch.push(job);
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        if one_at_a_time && !batch.is_empty() {
            if let Err(fatal) = poll_fn(|cx| conn.poll_clear(cx, batch)).await {
                return fatal;
            }
        }
        if !batch.is_empty() {
            // Nothing in flight: the connection sat idle, and its socket is looked at before
            // the batch goes out, as a lone caller's is ([`nothing_waiting`]). On a runtime
            // not driven while it sat idle (a current-thread one, `block_on` per call) a
            // server's close went unseen, and a burst of callers was written onto the dead
            // connection and failed whole (an outside audit: 8 of 8 requests in 5 of 10
            // rounds after memcached's idle kill; only the lone caller's path looked).
            match conn.nothing_waiting_if_clear() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(fatal) => return fatal,
            }
        }
        if conn.overdue() {
            // The replies in flight are owed past the read timeout with nothing read: the
            // reader closes the connection for the silence any moment now (`read_loop`).
            // What was taken is not written onto it: answered "not sent", it goes out on a
            // new connection. Written, a call that came right after another's timeout
            // failed half a millisecond later with that timeout.
            for job in batch.drain(..) {
                job.reply.send(Err(Failure::NotSent));
            }
            return Fatal::Timeout(settings.read_timeout);
        }
        let mut direct_waker = None;
        let (out, writer, jobs) = {
            let mut st = conn.lock();
            if let Some(fatal) = st.fatal.clone() {
                drop(st);
                for job in batch.drain(..) {
                    job.reply.send(Err(fatal.unsent(&settings.label)));
                }
                return fatal;
            }
            // A caller that left since its job was taken is dropped here, under the lock
            // the job enters the FIFO by: a caller that leaves later finds its job in flight,
            // and its note (`Abandoned`) stays until the reply is read. Left between the
            // look when it was taken and this entry, the note could be cleared by an empty
            // FIFO while the job was still to be written, and the caller's next request,
            // sent on another connection, could run first (an outside audit: 3 older values
            // in about 6,500 cancelled sets with meta over 4 connections).
            batch.retain(|job| !job.reply.is_closed());
            // In the classic protocol the job waits while a direct caller's request is
            // in flight (the rest of it, unfinished, is written alone).
            let jobs = if !one_at_a_time || st.clear() {
                batch.len()
            } else {
                0
            };
            let prefix = st.unfinished.take();
            if prefix.is_some() {
                conn.hints.has_unfinished.store(false, Ordering::Release);
            }
            let out = match (prefix, batch.get_mut(..jobs).unwrap_or_default()) {
                (None, []) => continue,
                (None, [one]) => std::mem::take(&mut one.bytes),
                (prefix, many) => {
                    buf.clear();
                    if let Some((bytes, written)) = &prefix {
                        buf.extend_from_slice(bytes.get(*written..).unwrap_or_default());
                    }
                    for job in many.iter() {
                        buf.extend_from_slice(&job.bytes);
                    }
                    std::mem::take(&mut buf)
                }
            };
            let mut pushed = false;
            for job in batch.drain(..jobs) {
                if job.steps.is_empty() {
                    job.reply.send(Ok(AnswerList::new()));
                    continue;
                }
                st.enter(job.steps, job.reply.written());
                pushed = true;
            }
            if pushed && st.owner != Owner::Task {
                st.owner = Owner::Task;
                direct_waker = st.direct_waker.take();
            }
            st.writer_waits = !batch.is_empty();
            st.writing = true;
            conn.note(&st);
            (out, st.writer.clone(), jobs)
        };
        if let Some(w) = direct_waker {
            w.wake();
        }
        let Some(writer) = writer else {
            return Fatal::Closed;
        };
        match tokio::time::timeout(settings.write_timeout, writer.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Fatal::io(&e),
            Err(_) => return Fatal::Timeout(settings.write_timeout),
        }
        {
            let mut st = conn.lock();
            st.writing = false;
            conn.note(&st);
        }
        settings.counters.writes.fetch_add(1, Ordering::Relaxed);
        settings
            .counters
            .jobs
            .fetch_add(jobs as u64, Ordering::Relaxed);
        // Kept for the next batch, up to a bound: the largest batch ever written (up to
        // `WRITE_BATCH_MAX` and a value) was kept for the connection's life, about 2 MB per
        // connection after one burst of 1 MB values (an outside audit).
        if out.capacity() >= buf.capacity() && out.capacity() <= KEEP_WRITE_BUF {
            buf = out;
        }
    }
}

/// Whether nothing waits on an idle connection's socket: `Ok(true)` when nothing arrived
/// (costing no system call unless the runtime saw the socket readable, and registering
/// no waker), `Ok(false)` when the read was interrupted (ask again), `Err` when bytes
/// nobody asked for arrived, or the socket closed or failed: the connection must close.
///
/// A connection last looked at [`LOOK_AFTER_IDLE`] or longer ago is asked with a system
/// call (one non-blocking `recv`), whatever the runtime last saw: a runtime not driven
/// while the connection sat idle (a current-thread one, run by `block_on` per call) has
/// not seen a server's close, and the request would go out on a dead connection and fail
/// (an outside audit: the first call after a server restart, 4 of 4 tries).
pub(super) fn nothing_waiting(rs: &mut ReadSide) -> Result<bool, Fatal> {
    let ReadSide {
        reader,
        buf,
        decoding,
        looked,
        ..
    } = rs;
    let now = Instant::now();
    let long_idle = now.saturating_duration_since(*looked) >= LOOK_AFTER_IDLE;
    *looked = now;
    let Some(reader) = reader.as_ref() else {
        return Err(Fatal::Closed);
    };
    if *decoding || !buf.filled().is_empty() {
        return Err(unasked(buf.filled()));
    }
    let spare = buf.spare();
    let offered = spare.len();
    let read = match long_idle {
        true => reader.read_now(spare),
        false => reader.try_read_into(spare),
    };
    match read {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(Fatal::io(&e)),
        Ok(0) => Err(Fatal::Closed),
        Ok(n) => {
            buf.filled_by(n, offered);
            Err(unasked(buf.filled()))
        }
    }
}
