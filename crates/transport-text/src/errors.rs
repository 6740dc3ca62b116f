//! How replies that are not the expected answer become typed errors.

use std::fmt;

use newcache_transport::{Error, ItemSizeMax, Result, ServerStats, Store};

use crate::batch::Answer;
use crate::command::{Cmd, Outcome, Wire};
use crate::conn::WIRE_CLASSIC;
use crate::proto::{Reply, Status};
use crate::{Protocol, TextTransport};

/// A command no server knows: memcached answers it `ERROR`, and a proxy that closes the
/// connection on commands it does not proxy (twemproxy) closes it. Asked after a
/// connection closed with no reply, to tell that proxy's refusal from a cut connection.
pub(crate) const UNKNOWN_COMMAND: &str = "newcache_unknown_command";

/// True for an [`Error::Io`] of a connection closed before any byte of the reply.
pub(crate) fn closed_without_reply(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if source.get_ref().is_some_and(|e| e.is::<ClosedWithoutReply>()))
}

/// The error of a server that closed the meta probe's connection before any reply and
/// did not answer `version` on a new one, as a memcached that takes only the binary
/// protocol does (`-S`, SASL; `-B binary`): an [`Error::Io`] whose text says what to use
/// instead. (It said only that the connection closed, which sent users looking for a
/// network fault.) It is not [`closed_without_reply`]: asking such a server again whether
/// it refused a command by closing (a proxy's way) only cost another read timeout.
pub(crate) fn probe_closed(server: &str) -> Error {
    Error::Io {
        server: server.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, ProbeClosed),
    }
}

/// The marker of [`probe_closed`]'s error.
#[derive(Debug)]
pub(crate) struct ProbeClosed;

impl fmt::Display for ProbeClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the server closed the connection without replying to a text command (the meta probe, or a command of a transport told which protocol to speak), and a new connection's `version` too, as a memcached that takes only the binary protocol does (started with -S for SASL, or -B binary; else something at that address closes every connection): speak to such a server with transport=libmemcached and binary=true (with username and password for SASL)",
        )
    }
}

impl std::error::Error for ProbeClosed {}

/// The marker of an [`Error::Io`] for a connection closed before any byte of the reply.
#[derive(Debug)]
pub(crate) struct ClosedWithoutReply;

impl fmt::Display for ClosedWithoutReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection closed before any reply came")
    }
}

impl std::error::Error for ClosedWithoutReply {}

pub(crate) fn unexpected(reply: Reply) -> Status {
    Status::ClientError(format!("unexpected reply {reply:?}"))
}

/// Maps a status that is not the expected answer to a typed error.
pub(crate) fn status_to_error(server: String, status: Status, command: &str) -> Error {
    match status {
        Status::Error => Error::Unsupported {
            server,
            command: command.to_string(),
        },
        Status::ClientError(message) => Error::Client { server, message },
        // A store refused as too large is mapped where the value's size is known (`store`,
        // `store_many`), to an `Error::ValueTooLarge` naming it.
        Status::ServerError(message) => Error::Server { server, message },
        other => Error::Protocol {
            server,
            detail: format!("unexpected reply {other:?} to {command}"),
        },
    }
}

/// The error for an error line (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`) in reply to
/// `cmd`: a store refused as too large is [`Error::ValueTooLarge`] naming its size (with
/// the configured `item_size_limit`).
pub(crate) fn refusal_error(
    label: &str,
    cmd: &Cmd<'_>,
    wire: Wire,
    status: Status,
    item_size_limit: usize,
) -> Error {
    if let (Cmd::Store(s), Status::ServerError(m)) = (cmd, &status) {
        if refused_as_too_large(m) {
            return s.refused_by_server(item_size_limit);
        }
    }
    status_to_error(label.to_string(), status, cmd.name(wire))
}

/// True for memcached's refusal of an item over its `-I` (`SERVER_ERROR object too large
/// for cache`).
pub(crate) fn refused_as_too_large(message: &str) -> bool {
    message.contains("too large")
}

impl TextTransport {
    /// The error for an answer that is not a keyed outcome: an error line, or a reply that
    /// does not belong in a keyed batch.
    pub(crate) fn answer_error(&self, index: usize, answer: Answer) -> Error {
        let label = self.label(index);
        match answer {
            Answer::Refused(_, command, status) => status_to_error(label, status, command),
            Answer::Line(reply) => status_to_error(label, unexpected(*reply), "a batch"),
            Answer::Key(_, outcome) => Error::Protocol {
                server: label,
                detail: format!("unexpected outcome {outcome:?}"),
            },
        }
    }

    pub(crate) fn outcome_error(&self, key: &[u8], outcome: Outcome) -> Error {
        let label = self
            .server_for_key(key)
            .map(|i| self.label(i))
            .unwrap_or_default();
        Error::Protocol {
            server: label,
            detail: format!("unexpected outcome {outcome:?}"),
        }
    }
}

/// What a store needs before it is sent, under [`Store::needs_server_limit`]: nothing, its
/// server's `-I` (as learnt, `None` when the server did not say), or that `-I` asked first.
pub(crate) enum LimitCheck {
    /// Send it: a `set`, a value every server takes, or classic commands (which leave the
    /// old item be on a refusal).
    Skip,
    /// Hold it to this limit.
    Known(Option<usize>),
    /// Ask the server (`stats settings`), then hold it to the answer.
    Ask,
}

impl LimitCheck {
    /// Whether `request` may need its server's `-I` under `protocol` at all: a transport
    /// asks this before it places the request (nearly every store does not).
    pub(crate) fn may_apply(request: &Store<'_>, protocol: Protocol) -> bool {
        request.needs_server_limit() && protocol != Protocol::Classic
    }

    /// The check for `request` to a server that speaks `wire` (a `WIRE_*`), whose `-I` is
    /// `learnt`, under `protocol`: one rule for both transports.
    pub(crate) fn of(
        request: &Store<'_>,
        protocol: Protocol,
        wire: u8,
        learnt: &ItemSizeMax,
    ) -> LimitCheck {
        if !Self::may_apply(request, protocol) || wire == WIRE_CLASSIC {
            return LimitCheck::Skip;
        }
        learnt.known().map_or(LimitCheck::Ask, LimitCheck::Known)
    }
}

/// The refusal of `request` held to a server's `-I` as asked: over it, or the server's
/// failure to answer (the request is not sent: it would fail the same way, after a second
/// timeout); `None`, send it (under it, or the server did not say).
pub(crate) fn over_server_limit(request: &Store<'_>, max: Result<Option<usize>>) -> Option<Error> {
    match max {
        Ok(max) => request.check_size(max?).err(),
        Err(e) => Some(e),
    }
}

/// The error for `request`, over `item_size_limit` and refused before it is sent: it
/// names the limit of the key's server (`limit`, `None` when the key has no server) when
/// that is lower and known (the server said it within a minute: a refusal of its own, or
/// `stats settings`), not the configured one. A caller sizing values by the limit named
/// failed again (an outside audit: a 2 MB value for a server at `-I 512k` said 1,048,513
/// bytes fit, after the server had said 524,225). Not asked here: a hung server made each
/// such refusal wait out the read timeout (another audit: 1 s each, 6 s for a `set_many` of
/// five).
pub(crate) fn over_limit(
    request: &Store<'_>,
    limit: Option<&ItemSizeMax>,
    item_size_limit: usize,
) -> Error {
    let known = limit.and_then(ItemSizeMax::known).flatten();
    request.refused_by_server_at(known, item_size_limit)
}

/// A server's `-I` from its answer to `stats settings` (`asked`, a one-server
/// [`server_stats`](crate::batch::server_stats)), kept in `learnt`: `Ok(None)` when it did
/// not say (kept too), the server's failure when it failed.
pub(crate) fn learn_item_size_max(
    asked: Result<Vec<ServerStats>>,
    learnt: Option<&ItemSizeMax>,
) -> Result<Option<usize>> {
    let max = match asked {
        Ok(servers) => match servers.into_iter().next() {
            Some(ServerStats {
                failure: Some(e), ..
            }) => return Err(e),
            Some(stats) => stats.item_size_max(),
            None => None,
        },
        Err(e) if e.is_server_failure() => return Err(e),
        // An error line: a server without `stats settings` (it did not say).
        Err(_) => None,
    };
    if let Some(learnt) = learnt {
        learnt.learn(max);
    }
    Ok(max)
}
