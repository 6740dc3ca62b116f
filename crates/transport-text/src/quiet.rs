//! Deletes with no reply per key (Django's `delete_many`): `noreply` deletes closed by a
//! `version` in the classic protocol, quiet `md`s closed by a tagged one in meta.

use crate::command::{Mismatch, Wire};
use crate::proto::{self, meta, Expect, Meta, Reply, Status};

/// Appends deletes of `keys` (`count` of them) with no reply per key: `delete <key>
/// noreply` each and a closing `version` in the classic protocol; in meta `md <key> q`
/// each (memcached leaves out the `HD`) but the last, without `q`, whose tagged reply
/// closes the round; meta commands are tagged with the tokens `next_opaque` gives, in
/// order.
pub(crate) fn encode_quiet_deletes<'k>(
    out: &mut Vec<u8>,
    wire: Wire,
    keys: impl Iterator<Item = &'k [u8]>,
    count: usize,
    mut next_opaque: impl FnMut() -> u32,
) {
    match wire {
        Wire::Classic => {
            for key in keys {
                proto::encode_delete_noreply(out, key);
            }
            proto::encode_line(out, "version");
        }
        Wire::Meta => {
            let last = count.saturating_sub(1);
            for (n, key) in keys.enumerate() {
                meta::encode_delete(out, key, n != last, next_opaque());
            }
        }
    }
}

/// Reads the replies to a round of quiet deletes ([`encode_quiet_deletes`]), one at a
/// time, sans IO. Classic: nothing but errors until the closing `VERSION`; a server that
/// ignored `noreply` may also answer each command: at most one line per command, then
/// `VERSION`. Meta: `md q` hides `HD` (`NF` and errors still come); the last delete is not
/// quiet, so its tagged reply says every delete before it was processed. Replies come in
/// order: each tagged one is for a delete after the one before.
#[derive(Debug, Clone)]
pub(crate) struct QuietRound {
    wire: Wire,
    first_opaque: u32,
    count: usize,
    /// The first delete (of the round) a tagged reply may still answer.
    next: usize,
    lines: usize,
}

/// What one reply of a [`QuietRound`] came to.
#[derive(Debug)]
pub(crate) enum QuietStep {
    /// More replies are due.
    More,
    /// An error line; more replies are due (classic).
    Refused(Status),
    /// An error line, which carries no tag: which delete it answers is not known, nor
    /// whether the last one's reply is still to come (meta). The round ends with it.
    RefusedLast(Status),
    /// The round is over.
    Done,
}

impl QuietRound {
    /// A round of `count` deletes in `wire`, the first tagged `first_opaque` in meta.
    pub(crate) fn new(wire: Wire, first_opaque: u32, count: usize) -> Self {
        QuietRound {
            wire,
            first_opaque,
            count,
            next: 0,
            lines: 0,
        }
    }

    /// Whether a tagged reply with `token` may still come in this round (meta); asked by
    /// the async transport only.
    #[cfg(feature = "tokio")]
    pub(crate) fn owes(&self, token: u32) -> bool {
        let from = self
            .first_opaque
            .wrapping_add(u32::try_from(self.next).unwrap_or(u32::MAX));
        let left = u32::try_from(self.count.saturating_sub(self.next)).unwrap_or(u32::MAX);
        self.wire == Wire::Meta && token.wrapping_sub(from) < left
    }

    /// The kind of the next reply.
    pub(crate) fn expect(&self) -> Expect {
        match self.wire {
            Wire::Classic => Expect::Status,
            Wire::Meta => Expect::Meta,
        }
    }

    /// The command's name, for errors.
    pub(crate) fn command(&self) -> &'static str {
        match self.wire {
            Wire::Classic => "delete",
            Wire::Meta => "md",
        }
    }

    /// Takes the next reply (`tag` its decoder's); `key_at(n)` is the key of the round's
    /// `n`th delete. A reply that answers none of the deletes still awaited, or one reply
    /// too many, is a [`Mismatch`].
    pub(crate) fn take<'k>(
        &mut self,
        reply: Reply,
        tag: &meta::Tag,
        key_at: impl Fn(usize) -> Option<&'k [u8]>,
    ) -> std::result::Result<QuietStep, Mismatch> {
        let step = match self.wire {
            Wire::Classic => {
                let step = match reply {
                    Reply::Status(Status::Version(_)) => return Ok(QuietStep::Done),
                    Reply::Status(Status::Deleted | Status::NotFound) => QuietStep::More,
                    Reply::Status(s) if s.is_error() => QuietStep::Refused(s),
                    other => {
                        return Err(Mismatch(format!("{other:?} is not an answer to a delete")))
                    }
                };
                self.lines += 1;
                if self.lines > self.count {
                    return Err(Mismatch(format!(
                        "more replies than the {} noreply deletes sent, and no VERSION",
                        self.count
                    )));
                }
                step
            }
            Wire::Meta => {
                self.lines += 1;
                match reply {
                    Reply::Status(s) if s.is_error() => return Ok(QuietStep::RefusedLast(s)),
                    Reply::Meta(Meta::Done | Meta::NotFound) => {
                        let last = self.count.saturating_sub(1);
                        let at = tag
                            .opaque()
                            .map(|o| o.wrapping_sub(self.first_opaque) as usize)
                            .filter(|&at| at >= self.next && at <= last);
                        let Some((at, key)) = at.and_then(|at| Some((at, key_at(at)?))) else {
                            return Err(Mismatch(format!(
                                "{tag:?} answers none of the deletes still awaited"
                            )));
                        };
                        if tag.key() != Some(key) {
                            return Err(Mismatch(format!("{tag:?} names another key")));
                        }
                        if at == last {
                            return Ok(QuietStep::Done);
                        }
                        self.next = at + 1;
                    }
                    other => return Err(Mismatch(format!("{other:?} is not an answer to md"))),
                }
                if self.lines > self.count {
                    return Err(Mismatch(format!(
                        "more replies than the {} deletes sent",
                        self.count
                    )));
                }
                QuietStep::More
            }
        };
        Ok(step)
    }
}
