//! One multiplexed connection: its queue, the task that writes what is queued and reads the
//! replies, and the FIFO of requests written and not yet answered (see the
//! [module documentation](super)).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use newcache_transport::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::steps::{Answer, Step, Taken};
use crate::command::{Outcome, Wire};
use crate::proto::{meta, Decoder, Reply, Status};
use crate::{ReadBuf, READ_BUF, WIRE_UNKNOWN};

/// The read half of a connection.
pub(super) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection.
pub(super) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The most request bytes one write gathers from the queue (a job larger than this is
/// still written whole).
const WRITE_BATCH_MAX: usize = 1024 * 1024;

/// Why a job got no answers.
#[derive(Debug)]
pub(super) enum Failure {
    /// Nothing of it was written: it may be sent again on another connection.
    NotSent,
    /// It was written (or may have been), and failed.
    Failed(Error),
}

/// What a job's caller is sent.
pub(super) type JobResult = Result<Vec<Answer>, Failure>;

/// Requests of one caller, written together, and the replies they await.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) bytes: Vec<u8>,
    pub(super) steps: Vec<Step>,
    pub(super) reply: oneshot::Sender<JobResult>,
}

/// A job written and not fully answered.
struct Pending {
    steps: Vec<Step>,
    next: usize,
    answers: Vec<Answer>,
    reply: oneshot::Sender<JobResult>,
    /// An error line was read: the connection closes once the job is answered.
    close_after: bool,
}

/// Why a connection closed.
#[derive(Debug, Clone)]
enum Fatal {
    Timeout(Duration),
    Io(io::ErrorKind, String),
    Protocol(String),
    /// Closed with nothing in flight: idle, or its transport dropped.
    Closed,
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
            Fatal::Protocol(detail) => Error::Protocol {
                server,
                detail: detail.clone(),
            },
            Fatal::Closed => Error::Io {
                server,
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "the connection was closed"),
            },
        }
    }
}

/// Counts of what the async transport's connections did.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connections: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) jobs: AtomicU64,
}

/// What a connection is set up with.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) label: String,
    pub(super) wire: Wire,
    pub(super) read_timeout: Duration,
    pub(super) write_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) queue: usize,
    /// The server's probed dialect, reset when a meta command is answered `ERROR` with
    /// `reprobe` (protocol auto): the next connection probes again.
    pub(super) server_wire: Arc<AtomicU8>,
    pub(super) reprobe: bool,
    pub(super) counters: Arc<Counters>,
}

struct State {
    fifo: VecDeque<Pending>,
    /// When the FIFO last went from empty to not.
    busy_since: Instant,
    /// The queue's senders are all gone: close once nothing is in flight.
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The caller's side of a connection: its queue, dialect and opaque tokens.
#[derive(Debug, Clone)]
pub(super) struct Handle {
    pub(super) tx: mpsc::Sender<Job>,
    pub(super) wire: Wire,
    opaque: Arc<AtomicU32>,
}

impl Handle {
    /// True until the connection closed.
    pub(super) fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }

    /// `n` opaque tokens in a row; the first is returned.
    pub(super) fn reserve(&self, n: usize) -> u32 {
        self.opaque
            .fetch_add(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed)
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
    let handle = Handle {
        tx,
        wire: settings.wire,
        opaque: Arc::new(AtomicU32::new(first_opaque)),
    };
    settings
        .counters
        .connections
        .fetch_add(1, Ordering::Relaxed);
    runtime.spawn(run(rx, reader, writer, settings));
    handle
}

/// The connection's task: writer and reader side by side until either fails, then every
/// job written fails with that error and every job still queued is answered
/// [`Failure::NotSent`].
async fn run(
    mut rx: mpsc::Receiver<Job>,
    mut reader: ReadHalf,
    mut writer: WriteHalf,
    settings: Settings,
) {
    let shared = Shared {
        state: Mutex::new(State {
            fifo: VecDeque::new(),
            busy_since: Instant::now(),
            closing: false,
        }),
    };
    let fatal = tokio::select! {
        f = write_loop(&mut rx, &mut writer, &shared, &settings) => f,
        f = read_loop(&mut reader, &shared, &settings) => f,
    };
    rx.close();
    drop(writer);
    drop(reader);
    let failed: Vec<Pending> = shared.lock().fifo.drain(..).collect();
    for pending in failed {
        let _ = pending
            .reply
            .send(Err(Failure::Failed(fatal.error(&settings.label))));
    }
    while let Ok(job) = rx.try_recv() {
        let _ = job.reply.send(Err(Failure::NotSent));
    }
}

/// Takes everything queued and writes it with one write, the jobs entering the FIFO first
/// (in the order written). A job whose caller left before it was written is dropped
/// unwritten.
async fn write_loop(
    rx: &mut mpsc::Receiver<Job>,
    writer: &mut WriteHalf,
    shared: &Shared,
    settings: &Settings,
) -> Fatal {
    let mut buf: Vec<u8> = Vec::new();
    let mut batch: Vec<Job> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            shared.lock().closing = true;
            return std::future::pending::<Fatal>().await;
        };
        batch.push(first);
        // Let the tasks that are ready queue their requests too, so they share this write.
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
        batch.retain(|job| !job.reply.is_closed());
        let jobs = batch.len();
        let out = match batch.as_mut_slice() {
            [] => continue,
            [one] => std::mem::take(&mut one.bytes),
            many => {
                buf.clear();
                for job in many.iter() {
                    buf.extend_from_slice(&job.bytes);
                }
                std::mem::take(&mut buf)
            }
        };
        {
            let mut state = shared.lock();
            if state.fifo.is_empty() {
                state.busy_since = Instant::now();
            }
            for job in batch.drain(..) {
                if job.steps.is_empty() {
                    let _ = job.reply.send(Ok(Vec::new()));
                    continue;
                }
                state.fifo.push_back(Pending {
                    answers: Vec::with_capacity(job.steps.len()),
                    steps: job.steps,
                    next: 0,
                    reply: job.reply,
                    close_after: false,
                });
            }
        }
        match tokio::time::timeout(settings.write_timeout, writer.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Fatal::Io(e.kind(), e.to_string()),
            Err(_) => return Fatal::Timeout(settings.write_timeout),
        }
        settings.counters.writes.fetch_add(1, Ordering::Relaxed);
        settings
            .counters
            .jobs
            .fetch_add(jobs as u64, Ordering::Relaxed);
        if jobs > 1 {
            buf = out;
        }
    }
}

/// Reads replies as they arrive, decodes each with the decoder of the step the oldest job
/// in the FIFO awaits, and checks it against that step: a reply that does not answer it, or
/// any byte when nothing is in flight, closes the connection. While requests are in
/// flight and nothing arrives for the read timeout, the connection is closed (a hung
/// server); idle, it is closed after the idle timeout, or once its transport is gone.
async fn read_loop(reader: &mut ReadHalf, shared: &Shared, settings: &Settings) -> Fatal {
    let mut buf = ReadBuf::new();
    let mut decoder: Option<Decoder> = None;
    let mut last_read = Instant::now();
    let tick = (settings.read_timeout / 4).max(Duration::from_millis(5));
    loop {
        loop {
            if decoder.is_none() {
                if buf.filled().is_empty() {
                    break;
                }
                let next = shared
                    .lock()
                    .fifo
                    .front()
                    .and_then(|p| p.steps.get(p.next))
                    .map(|step| step.decoder(settings.wire));
                match next {
                    Some(d) => decoder = Some(d),
                    None => return unasked(buf.filled()),
                }
            }
            let Some(d) = decoder.as_mut() else { break };
            let parsed = match d.decode(buf.filled()) {
                Ok(parsed) => parsed,
                Err(e) => return Fatal::Protocol(format!("unparsable reply: {}", e.0)),
            };
            buf.consume(d.consumed());
            let Some(reply) = parsed else { break };
            let tag = *d.tag();
            decoder = None;
            if let Some(fatal) = complete(shared, settings, reply, &tag) {
                return fatal;
            }
        }
        let (busy, since, closing) = {
            let state = shared.lock();
            (!state.fifo.is_empty(), state.busy_since, state.closing)
        };
        let now = Instant::now();
        let active = since.max(last_read);
        let deadline = if busy {
            active + settings.read_timeout
        } else {
            if closing {
                return Fatal::Closed;
            }
            if !settings.idle_timeout.is_zero() && now >= active + settings.idle_timeout {
                return Fatal::Closed;
            }
            now + tick
        };
        let direct = decoder
            .as_mut()
            .and_then(Decoder::value_spare)
            .is_some_and(|v| v.len() >= READ_BUF);
        let mut offered = 0;
        let read = if direct {
            let Some(value) = decoder.as_mut().and_then(Decoder::value_spare) else {
                continue;
            };
            tokio::time::timeout_at(deadline, reader.read(value)).await
        } else {
            let spare = buf.spare();
            offered = spare.len();
            tokio::time::timeout_at(deadline, reader.read(spare)).await
        };
        match read {
            Err(_) if busy => return Fatal::Timeout(settings.read_timeout),
            Err(_) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Fatal::Io(e.kind(), e.to_string()),
            Ok(Ok(0)) => {
                return if busy || decoder.is_some() || !buf.filled().is_empty() {
                    Fatal::Io(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection with replies still due".into(),
                    )
                } else {
                    Fatal::Closed
                };
            }
            Ok(Ok(n)) => {
                last_read = Instant::now();
                match decoder.as_mut() {
                    Some(d) if direct => d.value_filled(n),
                    _ => buf.filled_by(n, offered),
                }
            }
        }
    }
}

/// The error for bytes that arrived with no request awaiting them.
fn unasked(bytes: &[u8]) -> Fatal {
    let shown = bytes.get(..bytes.len().min(40)).unwrap_or_default();
    Fatal::Protocol(format!(
        "{} bytes arrived with no request awaiting a reply ({:?}...); the connection was closed",
        bytes.len(),
        String::from_utf8_lossy(shown)
    ))
}

/// Gives a complete reply to the step the oldest job awaits; answers the job once its last
/// step is read. `Some` when the connection must close.
fn complete(shared: &Shared, settings: &Settings, reply: Reply, tag: &meta::Tag) -> Option<Fatal> {
    let mut state = shared.lock();
    let Some(front) = state.fifo.front_mut() else {
        return Some(Fatal::Protocol(
            "a reply arrived with no request awaiting it; the connection was closed".into(),
        ));
    };
    let Some(step) = front.steps.get_mut(front.next) else {
        return Some(Fatal::Protocol("a job with no step left".into()));
    };
    match step.take(reply, tag, settings.wire) {
        Err(detail) => {
            return Some(Fatal::Protocol(format!(
                "the reply does not answer its request ({detail}); the connection was closed"
            )))
        }
        Ok(Taken::Answer(answer)) => {
            front.answers.extend(answer);
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
    if front.next < front.steps.len() {
        return None;
    }
    let done = state.fifo.pop_front()?;
    let _ = done.reply.send(Ok(done.answers));
    done.close_after.then(|| {
        Fatal::Protocol(
            "the connection was closed after an error line to an earlier request on it".into(),
        )
    })
}
