//! What a job awaits and what its replies come to: each reply decoded for its step and
//! checked with the blocking transport's checks ([`command::interpret`],
//! [`command::place_values`], [`QuietRound`], the multi-get's closing tag).

use newcache_transport::{Item, ShortKey, Store, StoreMode};
use smallvec::SmallVec;

use crate::command::{self, Cmd, Outcome, Wire};
use crate::proto::{meta, Decoder, Expect, Meta, Reply, Status};
use crate::quiet::{QuietRound, QuietStep};

/// A keyed command, owned, as the reader needs it to check its reply: the key and what
/// the command is (a store's value is not kept: a reply does not depend on it).
#[derive(Debug, Clone)]
pub(super) struct OwnedCmd {
    key: ShortKey,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Get,
    Store(StoreMode),
    Delete,
    Arith { delta: u64, incr: bool },
    Touch(u32),
    MetaGet(u32),
    Invalidate(u32, Option<u64>),
}

impl OwnedCmd {
    pub(super) fn of(cmd: &Cmd<'_>) -> OwnedCmd {
        let kind = match *cmd {
            Cmd::Get(_) => Kind::Get,
            Cmd::Store(s) => Kind::Store(s.mode),
            Cmd::Delete(_) => Kind::Delete,
            Cmd::Arith { delta, incr, .. } => Kind::Arith { delta, incr },
            Cmd::Touch { exptime, .. } => Kind::Touch(exptime),
            Cmd::MetaGet { recache_below, .. } => Kind::MetaGet(recache_below),
            Cmd::Invalidate { grace, cas, .. } => Kind::Invalidate(grace, cas),
        };
        OwnedCmd {
            key: ShortKey::new(cmd.key()),
            kind,
        }
    }

    /// Runs `f` on the command as [`command`] knows it.
    fn with<R>(&self, f: impl FnOnce(&Cmd<'_>) -> R) -> R {
        let key = self.key.as_bytes();
        match self.kind {
            Kind::Get => f(&Cmd::Get(key)),
            Kind::Store(mode) => {
                let store = Store {
                    mode,
                    key,
                    value: &[],
                    flags: 0,
                    exptime: 0,
                };
                f(&Cmd::Store(&store))
            }
            Kind::Delete => f(&Cmd::Delete(key)),
            Kind::Arith { delta, incr } => f(&Cmd::Arith { key, delta, incr }),
            Kind::Touch(exptime) => f(&Cmd::Touch { key, exptime }),
            Kind::MetaGet(recache_below) => f(&Cmd::MetaGet { key, recache_below }),
            Kind::Invalidate(grace, cas) => f(&Cmd::Invalidate { key, grace, cas }),
        }
    }
}

/// A job's steps: inline for one (a lone keyed command, a multi-get on a classic
/// connection), so the commonest job allocates no list for them.
pub(super) type Steps = SmallVec<[Step; 1]>;

/// A job's answers, one per step in order: inline for one, as [`Steps`].
pub(super) type AnswerList = SmallVec<[Answer; 1]>;

/// One reply a job awaits, in the order its commands were written.
#[derive(Debug)]
pub(super) enum Step {
    /// A keyed command's reply, checked by [`command::interpret`] (in meta: its opaque
    /// token and key).
    Cmd { cmd: OwnedCmd, opaque: u32 },
    /// The `VALUE` block of a `gets` of these keys, checked by [`command::place_values`].
    Gets { keys: Keys },
    /// The tagged reply of the `mg` that closes a multi-get on a meta connection.
    Closer { key: Vec<u8>, opaque: u32 },
    /// The reply to a one-line command (`flush_all`, `stats`).
    Line(Expect),
    /// The replies to a round of quiet deletes of these keys, read by [`QuietRound`].
    Quiet { round: QuietRound, keys: Keys },
}

/// The keys of a multi-key step, owned (the reply is read after the caller's borrow ends)
/// in one buffer: two allocations for a batch, not one per key.
#[derive(Debug)]
pub(super) struct Keys {
    bytes: Vec<u8>,
    /// Where each key ends in `bytes` (it starts where the one before ends).
    ends: Vec<usize>,
}

impl Keys {
    pub(super) fn new(keys: &[&[u8]]) -> Keys {
        let mut bytes = Vec::with_capacity(keys.iter().map(|k| k.len()).sum());
        let ends = keys
            .iter()
            .map(|k| {
                bytes.extend_from_slice(k);
                bytes.len()
            })
            .collect();
        Keys { bytes, ends }
    }

    /// The number of keys.
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// The `n`th key.
    fn get(&self, n: usize) -> Option<&[u8]> {
        let start = match n.checked_sub(1) {
            None => 0,
            Some(before) => *self.ends.get(before)?,
        };
        self.bytes.get(start..*self.ends.get(n)?)
    }
}

/// Whether the last of a job's answers is a value that may hold the replies after it: the
/// next of which carries `next` as its token (`None`: a reply with no token is due next),
/// and `in_flight` tells the tokens of the replies still owed. A value cut short by
/// exactly the length of the replies after it ends with them, less the last one's line
/// end, and every tagged reply's line ends ` O<token>` (then the win flags ` W`, ` X`,
/// ` Z`) before its line end or there; an error line is untagged (`SERVER_ERROR ...`), and
/// so are a classic `gets` reply's and a one-line command's (`END`, `OK`, `VERSION ...`).
/// A job whose reply ended a read with others still owed is held only then
/// (`Conn::complete`): holding every such job made a reply that had come whole wait for
/// the next one, and fail when that one was late or its connection closed (a review);
/// checking the next token alone at the value's end let a value that took in a value
/// reply, or two replies, through (a review: 30 of 33 such cuts reached a caller);
/// holding every value with a line end or `ERROR` in it held text and CSV behind a late
/// reply (a review).
pub(super) fn may_hold_a_reply(
    answers: &AnswerList,
    next: Option<u32>,
    in_flight: impl Fn(u32) -> bool,
) -> bool {
    let value = match answers.last() {
        Some(Answer::Outcome(Outcome::Item(Some(item)))) => &item.value,
        Some(Answer::Outcome(Outcome::Meta(Some(meta)))) => &meta.item.value,
        Some(Answer::Items(items)) => match items.iter().rev().flatten().next() {
            Some(item) => &item.value,
            None => return false,
        },
        _ => return false,
    };
    // A tagged reply of a request still owed, its line ended by a line end or the value.
    let tagged = holds_a_tag(value, &in_flight, false);
    if tagged {
        return true;
    }
    let last_line = match memchr::memmem::rfind(value, b"\r\n") {
        Some(at) => value.get(at + 2..).unwrap_or_default(),
        None => value.as_slice(),
    };
    let error_line = memchr::memmem::find(last_line, b"SERVER_ERROR").is_some()
        || memchr::memmem::find(last_line, b"CLIENT_ERROR").is_some()
        || last_line.ends_with(b"ERROR");
    // Before an untagged reply, any token at the end (a meta quiet round's last reply).
    let any_token_last = || holds_a_tag(last_line, |_| true, true);
    error_line
        || (next.is_none()
            && (last_line.ends_with(b"END")
                || last_line.ends_with(b"OK")
                || memchr::memmem::find(last_line, b"VERSION ").is_some()
                || any_token_last()))
}

/// Whether `bytes` hold a reply line's tag, ` O<t>` then any win flags (` W`, ` X`, ` Z`),
/// with `t` one `owed` tells, ending the bytes, or (unless `at_end`) a line in them.
fn holds_a_tag(bytes: &[u8], owed: impl Fn(u32) -> bool, at_end: bool) -> bool {
    memchr::memmem::find_iter(bytes, b" O").any(|at| {
        let rest = bytes.get(at + 2..).unwrap_or_default();
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let token = std::str::from_utf8(rest.get(..digits).unwrap_or_default())
            .ok()
            .and_then(|d| d.parse::<u32>().ok());
        let after = rest.get(digits..).unwrap_or_default();
        let flags = after
            .iter()
            .take_while(|&&b| matches!(b, b' ' | b'W' | b'X' | b'Z'))
            .count();
        let end = after.get(flags..).unwrap_or_default();
        // Digits past a u32 are no token, but at the end they still end as a tag does.
        let tag = digits > 0 && token.map_or(at_end, &owed);
        tag && (end.is_empty() || (!at_end && end.starts_with(b"\r\n")))
    })
}

impl Step {
    /// Whether this step's replies may still carry `token` in `wire` (a quiet round's
    /// tagged replies each carry one of the round's tokens).
    pub(super) fn owes(&self, token: u32, wire: Wire) -> bool {
        match self {
            Step::Quiet { round, .. } => round.owes(token),
            step => step.opaque(wire) == Some(token),
        }
    }

    /// The opaque token this step's reply carries in `wire`, if any.
    pub(super) fn opaque(&self, wire: Wire) -> Option<u32> {
        match self {
            Step::Cmd { opaque, .. } if wire == Wire::Meta => Some(*opaque),
            Step::Closer { opaque, .. } => Some(*opaque),
            _ => None,
        }
    }

    /// Readies `decoder` for this step's reply.
    pub(super) fn ready(&self, decoder: &mut Decoder, wire: Wire) {
        match self {
            Step::Cmd { cmd, .. } => cmd.with(|c| decoder.reset(c.expect(wire), 0)),
            Step::Gets { keys } => decoder.reset(Expect::Values, keys.len()),
            Step::Closer { .. } => decoder.reset(Expect::Meta, 0),
            Step::Line(expect) => decoder.reset(*expect, 0),
            Step::Quiet { round, .. } => decoder.reset(round.expect(), 0),
        }
    }

    /// What the reply says, or why it is not this step's ([`command::Mismatch`]'s text).
    pub(super) fn take(
        &mut self,
        reply: Reply,
        tag: &meta::Tag,
        wire: Wire,
    ) -> Result<Taken, String> {
        match self {
            Step::Cmd { cmd, opaque } => {
                let outcome = cmd
                    .with(|c| command::interpret(c, wire, reply, tag, *opaque))
                    .map_err(|m| m.0)?;
                Ok(match outcome {
                    Outcome::Refused(status) => Taken::Refused(status),
                    outcome => Taken::Answer(Some(Answer::Outcome(outcome))),
                })
            }
            Step::Gets { keys } => match reply {
                Reply::Values(values) => {
                    let mut items = vec![None; keys.len()];
                    command::place_values(*values, wire, keys.len(), |m| keys.get(m), &mut items)
                        .map_err(|m| m.0)?;
                    Ok(Taken::Answer(Some(Answer::Items(items))))
                }
                Reply::Status(s) if s.is_error() => Ok(Taken::Stop(s)),
                other => Err(format!("{other:?} is not an answer to a multi-get")),
            },
            Step::Closer { key, opaque } => match reply {
                Reply::Meta(Meta::Done | Meta::Miss) => {
                    tag.check(*opaque, key).map_err(|e| e.0)?;
                    Ok(Taken::Answer(None))
                }
                other => Err(format!(
                    "{other:?} where the multi-get's closing mg was due"
                )),
            },
            Step::Line(_) => match reply {
                Reply::Status(s) if s.is_error() => Ok(Taken::Stop(s)),
                reply => Ok(Taken::Answer(Some(Answer::Line(Box::new(reply))))),
            },
            Step::Quiet { round, keys } => {
                let key_at = |n: usize| keys.get(n);
                Ok(match round.take(reply, tag, key_at).map_err(|m| m.0)? {
                    QuietStep::More => Taken::More,
                    QuietStep::Refused(s) => Taken::RefusedMore(s),
                    QuietStep::RefusedLast(s) => Taken::Stop(s),
                    QuietStep::Done => Taken::Answer(None),
                })
            }
        }
    }
}

/// What one reply came to.
pub(super) enum Taken {
    /// The step's answer (none for a multi-get's closer).
    Answer(Option<Answer>),
    /// An error line to a keyed command: the job goes on (in meta the connection too).
    Refused(Status),
    /// An error line where the job's other replies may or may not come: the job ends
    /// with it, and the connection is closed.
    Stop(Status),
    /// The step awaits more replies.
    More,
    /// An error line among a step's replies (a quiet delete refused): recorded, more
    /// replies due, and the connection is closed once the job is answered.
    RefusedMore(Status),
}

/// One answer of a job, per step.
#[derive(Debug)]
pub(super) enum Answer {
    /// A keyed command's outcome ([`Outcome::Refused`] for an error line).
    Outcome(Outcome),
    /// A multi-get's items, one per key asked for, in order.
    Items(Vec<Option<Item>>),
    /// A one-line command's reply, or an error line.
    Line(Box<Reply>),
}

impl crate::batch::LineAnswer for Answer {
    fn into_line(self) -> std::result::Result<Reply, Self> {
        match self {
            Answer::Line(reply) => Ok(*reply),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{may_hold_a_reply, Answer, AnswerList, Keys, Step};
    use crate::command::Outcome;
    use crate::command::Wire;
    use newcache_transport::Item;

    fn got(value: &[u8]) -> AnswerList {
        let item = Item {
            value: value.to_vec(),
            flags: 0,
            cas: None,
        };
        smallvec::smallvec![Answer::Outcome(Outcome::Item(Some(item)))]
    }

    /// A value is held for the next reply only when it ends as that reply's line would:
    /// ` O<token>`, perhaps with win flags; or when the next reply has no token to tell.
    #[test]
    fn only_a_value_ending_as_the_next_reply_may_hold_it() {
        let owed = |t: u32| (5..=18).contains(&t);
        assert!(may_hold_a_reply(&got(b"xxxxHD kb1 O5"), Some(5), owed));
        assert!(may_hold_a_reply(
            &got(b"xxVA 1 f0 c3 t10 kk O5 X W"),
            Some(5),
            owed
        ));
        assert!(!may_hold_a_reply(&got(b"xxxxHD kb1 O55"), Some(5), owed));
        assert!(!may_hold_a_reply(&got(b"value-of-a"), Some(5), owed));
        assert!(!may_hold_a_reply(&got(b"value-of-a"), None, owed));
        // A value reply, or two replies, taken in: a token owed, then a line end.
        assert!(may_hold_a_reply(
            &got(b"xxVA 4 f0 c2 kb O18\r\nbbbb"),
            Some(18),
            owed
        ));
        assert!(may_hold_a_reply(
            &got(b"xxHD kb4 O15\r\nHD kc4 O16"),
            Some(15),
            owed
        ));
        // Text with line ends, or `ERROR` in it, is not held.
        assert!(!may_hold_a_reply(&got(b"a,b\r\nc,d\r\n"), Some(5), owed));
        assert!(!may_hold_a_reply(
            &got(b"no ERROR here\r\nfine"),
            Some(5),
            owed
        ));
        // An error line (untagged) last, and untagged replies' ends.
        assert!(may_hold_a_reply(
            &got(b"xxSERVER_ERROR out of memory"),
            Some(3),
            owed
        ));
        assert!(may_hold_a_reply(&got(b"xxEND"), None, owed));
        assert!(!may_hold_a_reply(&got(b"xxEND"), Some(5), owed));
        // A meta quiet round's last reply taken in, before that round (no token of its
        // own to look for; a review got one through).
        assert!(may_hold_a_reply(&got(b"helloHD kdb O3"), None, |_| false));
        let round = crate::quiet::QuietRound::new(Wire::Meta, 7, 3);
        let step = Step::Quiet {
            round,
            keys: Keys::new(&[b"a", b"b", b"c"]),
        };
        assert!(
            step.owes(9, Wire::Meta) && !step.owes(10, Wire::Meta) && !step.owes(6, Wire::Meta)
        );
        let miss: AnswerList = smallvec::smallvec![Answer::Outcome(Outcome::Item(None))];
        assert!(!may_hold_a_reply(&miss, None, owed));
    }

    #[test]
    fn keys_in_one_buffer_come_back_as_given() {
        let given: [&[u8]; 4] = [b"a", b"", b"key-two", b"k"];
        let keys = Keys::new(&given);
        assert_eq!(keys.len(), 4);
        for (n, key) in given.iter().enumerate() {
            assert_eq!(keys.get(n), Some(*key), "key {n}");
        }
        assert_eq!(keys.get(4), None);
        assert_eq!(Keys::new(&[]).get(0), None);
    }
}
