//! One request to one server, in either dialect, and what its reply means: encoding (meta
//! with an opaque token and the key echoed back, or classic) and the checks that a reply is
//! the awaited one. No I/O; the transport writes what [`Cmd::encode`] wrote and hands each
//! decoded reply to [`interpret`].
//!
//! A reply that does not answer its request is an error ([`Mismatch`]), after which the
//! connection must be dropped:
//! - meta: the reply's tag (opaque token and key) differs from the request's, or its code is
//!   not one the command can answer (`EN` to a `ms`...);
//! - classic: a `VALUE` for a key the request did not name (or more values than it named),
//!   or a status line the command cannot be answered with (`DELETED` to a `set`...).
//!
//! Error lines (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`) carry no tag in either dialect and
//! are [`Outcome::Refused`]; the connection is not reused after one either.

use newcache_transport::{Item, MetaItem, Store, StoreMode, StoreStatus};

use crate::proto::{self, meta, Expect, Meta, Reply, Status, Values};

/// The dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// memcached 1.6's meta commands, every one tagged.
    Meta,
    /// The classic text commands (servers and proxies without meta).
    Classic,
}

/// One keyed request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmd<'a> {
    /// `gets` / `mg v f c`.
    Get(&'a [u8]),
    /// A store of any mode.
    Store(&'a Store<'a>),
    /// `delete` / `md`.
    Delete(&'a [u8]),
    /// `incr`/`decr` / `ma`.
    Arith {
        key: &'a [u8],
        delta: u64,
        incr: bool,
    },
    /// `touch` / `mg T`.
    Touch { key: &'a [u8], exptime: u32 },
    /// `mg v f c t R` (meta only).
    MetaGet { key: &'a [u8], recache_below: u32 },
    /// `md I T`, with `C` when `cas` (meta only).
    Invalidate {
        key: &'a [u8],
        grace: u32,
        cas: Option<u64>,
    },
}

/// A keyed request's answer.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A get's item, or a miss.
    Item(Option<Item>),
    /// A store's status.
    Stored(StoreStatus),
    /// A delete: whether there was an item.
    Deleted(bool),
    /// An incr/decr: the new number, or `None` when the key holds no item.
    Counter(Option<u64>),
    /// A touch: whether the key holds an item.
    Touched(bool),
    /// A meta get's item, or a miss.
    Meta(Option<MetaItem>),
    /// An invalidation: whether the key held an item.
    Invalidated(bool),
    /// An error line (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`).
    Refused(Status),
}

/// Why a reply is not the awaited one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch(pub String);

/// A command the classic protocol cannot express (the meta-only ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NeedsMeta(pub &'static str);

impl<'a> Cmd<'a> {
    /// What goes on the wire for a store in a batch: the store itself, or, when its value
    /// is over the item size limit (`over`), the delete of the key for a `set` (memcached
    /// unlinks the old item of a `set` it refuses as too large) and nothing for the other
    /// modes.
    pub(crate) fn for_store(request: &'a Store<'a>, over: bool) -> Option<Cmd<'a>> {
        match (over, request.mode) {
            (false, _) => Some(Cmd::Store(request)),
            (true, StoreMode::Set) => Some(Cmd::Delete(request.key)),
            (true, _) => None,
        }
    }

    /// The key the command names.
    pub(crate) fn key(&self) -> &'a [u8] {
        match *self {
            Cmd::Get(key) | Cmd::Delete(key) => key,
            Cmd::Store(s) => s.key,
            Cmd::Arith { key, .. }
            | Cmd::Touch { key, .. }
            | Cmd::MetaGet { key, .. }
            | Cmd::Invalidate { key, .. } => key,
        }
    }

    /// The command's name in this dialect, for error messages.
    pub(crate) fn name(&self, wire: Wire) -> &'static str {
        match (wire, *self) {
            (Wire::Classic, Cmd::Get(_)) => "gets",
            (Wire::Classic, Cmd::Store(s)) => s.mode.command(),
            (Wire::Classic, Cmd::Delete(_)) => "delete",
            (Wire::Classic, Cmd::Arith { incr: true, .. }) => "incr",
            (Wire::Classic, Cmd::Arith { incr: false, .. }) => "decr",
            (Wire::Classic, Cmd::Touch { .. }) => "touch",
            (_, Cmd::MetaGet { .. }) => "mg",
            (_, Cmd::Invalidate { .. }) => "md",
            (Wire::Meta, Cmd::Get(_) | Cmd::Touch { .. }) => "mg",
            (Wire::Meta, Cmd::Store(_)) => "ms",
            (Wire::Meta, Cmd::Delete(_)) => "md",
            (Wire::Meta, Cmd::Arith { .. }) => "ma",
        }
    }

    /// The kind of reply the command gets in this dialect.
    pub(crate) fn expect(&self, wire: Wire) -> Expect {
        match (wire, self) {
            (Wire::Meta, _) => Expect::Meta,
            (Wire::Classic, Cmd::Get(_)) => Expect::Values,
            (Wire::Classic, _) => Expect::Status,
        }
    }

    /// Request bytes, about (for the pipelining rounds): the key, the value, the command
    /// line's other fields and the tag.
    pub(crate) fn cost(&self) -> usize {
        let value = match self {
            Cmd::Store(s) => s.value.len(),
            _ => 0,
        };
        self.key().len() + value + REQUEST_OVERHEAD
    }

    /// Reply bytes of a command without a value (a store's, a delete's...), about.
    pub(crate) fn reply_cost(&self, wire: Wire) -> usize {
        match wire {
            // `HD k<key> O<token>\r\n`
            Wire::Meta => self.key().len() + 20,
            Wire::Classic => 24,
        }
    }

    /// Appends the command in this dialect, tagged with `opaque` in meta. The meta-only
    /// commands cannot be said in the classic protocol.
    pub(crate) fn encode(
        &self,
        out: &mut Vec<u8>,
        wire: Wire,
        opaque: u32,
    ) -> Result<(), NeedsMeta> {
        match (wire, *self) {
            (Wire::Meta, Cmd::Get(key)) => meta::encode_get(out, key, opaque),
            (Wire::Meta, Cmd::Store(s)) => {
                meta::encode_store(out, s.mode, s.key, s.value, s.flags, s.exptime, opaque)
            }
            (Wire::Meta, Cmd::Delete(key)) => meta::encode_delete(out, key, false, opaque),
            (Wire::Meta, Cmd::Arith { key, delta, incr }) => {
                meta::encode_arith(out, incr, key, delta, opaque)
            }
            (Wire::Meta, Cmd::Touch { key, exptime }) => {
                meta::encode_touch(out, key, exptime, opaque)
            }
            (Wire::Meta, Cmd::MetaGet { key, recache_below }) => {
                meta::encode_meta_get(out, key, recache_below, opaque)
            }
            (Wire::Meta, Cmd::Invalidate { key, grace, cas }) => {
                meta::encode_invalidate(out, key, grace, cas, opaque)
            }
            (Wire::Classic, Cmd::Get(key)) => proto::encode_get(out, &[key], true),
            (Wire::Classic, Cmd::Store(s)) => {
                proto::encode_store(out, s.mode, s.key, s.value, s.flags, s.exptime, false)
            }
            (Wire::Classic, Cmd::Delete(key)) => proto::encode_delete(out, key),
            (Wire::Classic, Cmd::Arith { key, delta, incr }) => {
                proto::encode_arith(out, incr, key, delta)
            }
            (Wire::Classic, Cmd::Touch { key, exptime }) => proto::encode_touch(out, key, exptime),
            (Wire::Classic, Cmd::MetaGet { .. }) => return Err(NeedsMeta("mg")),
            (Wire::Classic, Cmd::Invalidate { .. }) => return Err(NeedsMeta("md")),
        }
        Ok(())
    }
}

/// Request bytes of a command beyond its key and value: the command, flags, exptime,
/// length, CAS unique, the tag and two line ends.
pub(crate) const REQUEST_OVERHEAD: usize = 64;

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key.get(..key.len().min(80)).unwrap_or_default()).into_owned()
}

/// What the reply to `cmd`, sent in `wire` (tagged with `opaque` in meta), says; `tag` is the
/// decoder's ([`proto::Decoder::tag`]). A reply that does not answer the command is a
/// [`Mismatch`].
pub(crate) fn interpret(
    cmd: &Cmd<'_>,
    wire: Wire,
    reply: Reply,
    tag: &meta::Tag,
    opaque: u32,
) -> Result<Outcome, Mismatch> {
    if let Reply::Status(status) = &reply {
        if status.is_error() {
            let Reply::Status(status) = reply else {
                return Err(Mismatch("an error line".into()));
            };
            return Ok(Outcome::Refused(status));
        }
    }
    match wire {
        Wire::Meta => interpret_meta(cmd, reply, tag, opaque),
        Wire::Classic => interpret_classic(cmd, reply),
    }
}

fn interpret_meta(
    cmd: &Cmd<'_>,
    reply: Reply,
    tag: &meta::Tag,
    opaque: u32,
) -> Result<Outcome, Mismatch> {
    let Reply::Meta(m) = reply else {
        return Err(Mismatch(format!(
            "{reply:?} is not a meta reply, to {}",
            cmd.name(Wire::Meta)
        )));
    };
    tag.check(opaque, cmd.key()).map_err(|e| Mismatch(e.0))?;
    let wrong = |m: &Meta| {
        Mismatch(format!(
            "{} {:?} cannot be answered {m:?}",
            cmd.name(Wire::Meta),
            show(cmd.key())
        ))
    };
    Ok(match (cmd, m) {
        (Cmd::Get(_), Meta::Value(v)) => Outcome::Item(Some(v.item)),
        (Cmd::Get(_), Meta::Miss) => Outcome::Item(None),
        (Cmd::Store(_), Meta::Done) => Outcome::Stored(StoreStatus::Stored),
        (Cmd::Store(_), Meta::NotStored) => Outcome::Stored(StoreStatus::NotStored),
        // Only a compare-and-swap (`C<cas>`) is answered EX or NF, as in the classic
        // protocol: to another store they were taken as its answer (an outside audit).
        (Cmd::Store(s), Meta::Exists) if matches!(s.mode, StoreMode::Cas(_)) => {
            Outcome::Stored(StoreStatus::Exists)
        }
        (Cmd::Store(s), Meta::NotFound) if matches!(s.mode, StoreMode::Cas(_)) => {
            Outcome::Stored(StoreStatus::NotFound)
        }
        (Cmd::Delete(_), Meta::Done) => Outcome::Deleted(true),
        (Cmd::Delete(_), Meta::NotFound) => Outcome::Deleted(false),
        (Cmd::Arith { .. }, Meta::Value(v)) => Outcome::Counter(Some(
            meta::parse_counter(&v.item.value).map_err(|e| Mismatch(e.0))?,
        )),
        (Cmd::Arith { .. }, Meta::NotFound) => Outcome::Counter(None),
        (Cmd::Touch { .. }, Meta::Done) => Outcome::Touched(true),
        (Cmd::Touch { .. }, Meta::Miss | Meta::NotFound) => Outcome::Touched(false),
        (Cmd::MetaGet { .. }, Meta::Value(v)) => Outcome::Meta(Some(v)),
        (Cmd::MetaGet { .. }, Meta::Miss | Meta::NotFound) => Outcome::Meta(None),
        (Cmd::Invalidate { .. }, Meta::Done) => Outcome::Invalidated(true),
        // Another item than the one asked for (`C<cas>`): left as it is.
        (Cmd::Invalidate { .. }, Meta::NotFound | Meta::Miss | Meta::Exists) => {
            Outcome::Invalidated(false)
        }
        (_, m) => return Err(wrong(&m)),
    })
}

fn interpret_classic(cmd: &Cmd<'_>, reply: Reply) -> Result<Outcome, Mismatch> {
    let name = cmd.name(Wire::Classic);
    let wrong = |what: String| {
        Mismatch(format!(
            "{what} is not an answer to {name} {:?}",
            show(cmd.key())
        ))
    };
    Ok(match (cmd, reply) {
        (Cmd::Get(key), Reply::Values(values)) => {
            Outcome::Item(single_value(key, *values).map_err(|e| wrong(e.0))?)
        }
        (Cmd::Store(s), Reply::Status(status)) => match status {
            Status::Stored => Outcome::Stored(StoreStatus::Stored),
            Status::NotStored => Outcome::Stored(StoreStatus::NotStored),
            // Only `cas` is answered EXISTS or NOT_FOUND.
            Status::Exists if matches!(s.mode, StoreMode::Cas(_)) => {
                Outcome::Stored(StoreStatus::Exists)
            }
            Status::NotFound if matches!(s.mode, StoreMode::Cas(_)) => {
                Outcome::Stored(StoreStatus::NotFound)
            }
            other => return Err(wrong(format!("{other:?}"))),
        },
        (Cmd::Delete(_), Reply::Status(Status::Deleted)) => Outcome::Deleted(true),
        (Cmd::Delete(_), Reply::Status(Status::NotFound)) => Outcome::Deleted(false),
        (Cmd::Arith { .. }, Reply::Status(Status::Number(n))) => Outcome::Counter(Some(n)),
        (Cmd::Arith { .. }, Reply::Status(Status::NotFound)) => Outcome::Counter(None),
        (Cmd::Touch { .. }, Reply::Status(Status::Touched)) => Outcome::Touched(true),
        (Cmd::Touch { .. }, Reply::Status(Status::NotFound)) => Outcome::Touched(false),
        (_, other) => return Err(wrong(format!("{other:?}"))),
    })
}

/// The item a `gets <key>` reply holds: none, or one `VALUE` of that key. Anything else
/// (another key, two values) is the reply to another request.
fn single_value(key: &[u8], values: Values) -> Result<Option<Item>, Mismatch> {
    let count = values.len();
    let mut found = None;
    values.try_for_each(|k, item| match count {
        1 if k == key => {
            found = Some(item);
            Ok(())
        }
        1 => Err(Mismatch(format!("VALUE {:?}", show(k)))),
        n => Err(Mismatch(format!("{n} values"))),
    })?;
    Ok(found)
}

/// Puts the values of a multi-get's `gets` reply in their places: `out[m]` for each of the
/// `count` keys asked for (`key_at(m)`, in the order asked) that a value names. Every value
/// must name a key that was asked for, carry a CAS unique (a `VALUE` line without one
/// answers a `get`, not this `gets`), and no key is answered more often than it was asked
/// for; otherwise the reply is not this request's.
///
/// memcached answers in the order of the request. On a connection speaking `Wire::Meta`
/// (memcached 1.6 itself, no proxy between) that order is required: each value names a key
/// after the last one answered, so a stray or duplicated `VALUE` inside the block (a part of
/// an earlier reply, one injected) fails the reply unless it names a key asked later that
/// had no value (an outside audit read a stray value before `END` as a hit; its line had no
/// CAS unique). In the classic protocol, which proxies speak, a value may come out of order,
/// and a key asked for twice and answered once (a proxy may merge them) is a hit twice.
pub(crate) fn place_values<'k>(
    values: Values,
    wire: Wire,
    count: usize,
    key_at: impl Fn(usize) -> Option<&'k [u8]>,
    out: &mut [Option<Item>],
) -> Result<(), Mismatch> {
    let filled = |out: &[Option<Item>], m: usize| out.get(m).is_some_and(Option::is_some);
    let in_order = wire == Wire::Meta;
    // Matched from a cursor, so a batch of n keys costs n comparisons, not n squared.
    let mut cursor = 0;
    let mut matched = 0;
    values.try_for_each(|key, item| {
        if item.cas.is_none() {
            return Err(Mismatch(format!(
                "VALUE {:?} without a CAS unique answers a get, not this multi-get's gets",
                show(key)
            )));
        }
        let fits = |m: usize, out: &[Option<Item>]| key_at(m) == Some(key) && !filled(out, m);
        let found = (cursor..count).find(|&m| fits(m, out)).or_else(|| {
            if in_order {
                None
            } else {
                (0..cursor).find(|&m| fits(m, out))
            }
        });
        let Some(m) = found else {
            return Err(Mismatch(format!(
                "VALUE {:?} answers no key this multi-get asked for{}",
                show(key),
                if in_order {
                    " after the last one answered"
                } else {
                    " (or one more often than asked)"
                }
            )));
        };
        cursor = m + 1;
        matched += 1;
        if let Some(slot) = out.get_mut(m) {
            *slot = Some(item);
        }
        Ok(())
    })?;
    if in_order || matched == 0 || matched == count {
        return Ok(());
    }
    for m in 0..count {
        if filled(out, m) {
            continue;
        }
        let twin = (0..m).find(|&e| key_at(e) == key_at(m) && filled(out, e));
        if let Some(e) = twin {
            let item = out.get(e).cloned().flatten();
            if let Some(slot) = out.get_mut(m) {
                *slot = item;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Decoder;

    fn item(v: &[u8]) -> Item {
        Item {
            value: v.to_vec(),
            flags: 0,
            cas: Some(1),
        }
    }

    fn decode(expect: Expect, input: &[u8]) -> (Reply, meta::Tag) {
        let mut d = Decoder::new(expect);
        let r = d.decode(input).unwrap().unwrap();
        (r, *d.tag())
    }

    fn meta_reply(cmd: Cmd<'_>, opaque: u32, input: &[u8]) -> Result<Outcome, Mismatch> {
        let (reply, tag) = decode(Expect::Meta, input);
        interpret(&cmd, Wire::Meta, reply, &tag, opaque)
    }

    /// A reply the decoder refuses (a second `VALUE` for one key) is an error too.
    fn classic_reply(cmd: Cmd<'_>, input: &[u8]) -> Result<Outcome, Mismatch> {
        let mut d = Decoder::new(cmd.expect(Wire::Classic));
        let reply = d.decode(input).map_err(|e| Mismatch(e.to_string()))?;
        interpret(&cmd, Wire::Classic, reply.unwrap(), d.tag(), 0)
    }

    #[test]
    fn meta_replies_must_carry_the_requests_token_and_key() {
        let get = Cmd::Get(b"a");
        assert!(matches!(
            meta_reply(get, 5, b"VA 1 f0 c1 ka O5\r\nx\r\n"),
            Ok(Outcome::Item(Some(_)))
        ));
        assert!(matches!(
            meta_reply(get, 5, b"EN ka O5\r\n"),
            Ok(Outcome::Item(None))
        ));
        for (input, what) in [
            (&b"VA 1 f0 c1 ka O4\r\nx\r\n"[..], "an earlier token"),
            (b"VA 1 f0 c1 kb O5\r\nx\r\n", "another key"),
            (b"EN\r\n", "no tag"),
            (b"HD ka O5\r\n", "a code a get is not answered with"),
        ] {
            assert!(meta_reply(get, 5, input).is_err(), "{what}");
        }
        let set = Store::set(b"a", b"v", 0, 0);
        assert!(matches!(
            meta_reply(Cmd::Store(&set), 9, b"NS ka O9\r\n"),
            Ok(Outcome::Stored(StoreStatus::NotStored))
        ));
        assert!(meta_reply(Cmd::Store(&set), 9, b"EN ka O9\r\n").is_err());
        // EX and NF answer a compare-and-swap only, as EXISTS and NOT_FOUND do.
        for input in [&b"EX ka O9\r\n"[..], b"NF ka O9\r\n"] {
            assert!(meta_reply(Cmd::Store(&set), 9, input).is_err());
        }
        let cas = set.with_mode(StoreMode::Cas(3));
        assert!(matches!(
            meta_reply(Cmd::Store(&cas), 9, b"EX ka O9\r\n"),
            Ok(Outcome::Stored(StoreStatus::Exists))
        ));
        assert!(matches!(
            meta_reply(Cmd::Store(&cas), 9, b"NF ka O9\r\n"),
            Ok(Outcome::Stored(StoreStatus::NotFound))
        ));
        let incr = Cmd::Arith {
            key: b"n",
            delta: 1,
            incr: true,
        };
        assert!(matches!(
            meta_reply(incr, 1, b"VA 2 kn O1\r\n42\r\n"),
            Ok(Outcome::Counter(Some(42)))
        ));
        assert!(matches!(
            meta_reply(incr, 1, b"NF kn O1\r\n"),
            Ok(Outcome::Counter(None))
        ));
        assert!(meta_reply(incr, 1, b"NF kn O2\r\n").is_err());
        // Error lines carry no tag: they are refusals, whatever the token.
        assert!(matches!(
            meta_reply(
                incr,
                1,
                b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
            ),
            Ok(Outcome::Refused(Status::ClientError(_)))
        ));
    }

    #[test]
    fn classic_replies_must_fit_their_command() {
        assert!(matches!(
            classic_reply(Cmd::Get(b"a"), b"VALUE a 0 1 5\r\nx\r\nEND\r\n"),
            Ok(Outcome::Item(Some(_)))
        ));
        assert!(matches!(
            classic_reply(Cmd::Get(b"a"), b"END\r\n"),
            Ok(Outcome::Item(None))
        ));
        assert!(classic_reply(Cmd::Get(b"a"), b"VALUE b 0 1\r\nx\r\nEND\r\n").is_err());
        assert!(classic_reply(
            Cmd::Get(b"a"),
            b"VALUE a 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n"
        )
        .is_err());
        let add = Store::set(b"a", b"v", 0, 0).with_mode(StoreMode::Add);
        assert!(matches!(
            classic_reply(Cmd::Store(&add), b"NOT_STORED\r\n"),
            Ok(Outcome::Stored(StoreStatus::NotStored))
        ));
        assert!(classic_reply(Cmd::Store(&add), b"EXISTS\r\n").is_err());
        assert!(classic_reply(Cmd::Store(&add), b"DELETED\r\n").is_err());
        assert!(classic_reply(Cmd::Delete(b"a"), b"STORED\r\n").is_err());
        assert!(classic_reply(Cmd::Delete(b"a"), b"5\r\n").is_err());
        assert!(classic_reply(
            Cmd::Touch {
                key: b"a",
                exptime: 1
            },
            b"DELETED\r\n"
        )
        .is_err());
        let mut out = Vec::new();
        assert_eq!(
            Cmd::MetaGet {
                key: b"a",
                recache_below: 1
            }
            .encode(&mut out, Wire::Classic, 0),
            Err(NeedsMeta("mg"))
        );
        assert!(out.is_empty());
    }

    fn values(keys: &[&[u8]]) -> Values {
        let mut v = Values::default();
        for k in keys {
            v.push(k, item(k)).unwrap();
        }
        v
    }

    #[test]
    fn multi_get_values_must_name_keys_that_were_asked_for() {
        let keys: [&[u8]; 4] = [b"a", b"b", b"a", b"c"];
        let key_at = |m: usize| keys.get(m).copied();
        for wire in [Wire::Classic, Wire::Meta] {
            let mut out = vec![None; 4];
            place_values(values(&[b"a", b"b", b"a"]), wire, 4, key_at, &mut out).unwrap();
            assert!(out[0].is_some() && out[1].is_some() && out[2].is_some() && out[3].is_none());
            for bad in [&[&b"x"[..]][..], &[b"b", b"b"], &[b"a", b"a", b"a"]] {
                let mut out = vec![None; 4];
                assert!(
                    place_values(values(bad), wire, 4, key_at, &mut out).is_err(),
                    "{wire:?} {bad:?}"
                );
            }
            // A VALUE line without a CAS unique answers a `get`, not this `gets`.
            let mut bare = Values::default();
            let mut no_cas = item(b"a");
            no_cas.cas = None;
            bare.push(b"a", no_cas).unwrap();
            let mut out = vec![None; 4];
            assert!(
                place_values(bare, wire, 4, key_at, &mut out).is_err(),
                "{wire:?}"
            );
        }
        // Classic (a proxy may merge duplicates and reorder): a hit twice, out of order.
        let mut out = vec![None; 4];
        place_values(values(&[b"a", b"c"]), Wire::Classic, 4, key_at, &mut out).unwrap();
        assert!(out[2].is_some() && out[3].is_some());
        let mut out = vec![None; 4];
        place_values(values(&[b"c", b"a"]), Wire::Classic, 4, key_at, &mut out).unwrap();
        // Meta (memcached itself answers in the order asked): a value before the last one
        // answered is not this reply's, and one asked once is one hit.
        for bad in [
            &[&b"c"[..], b"a"][..],
            &[b"b", b"a", b"b"],
            &[b"a", b"c", b"a"],
        ] {
            let mut out = vec![None; 4];
            assert!(
                place_values(values(bad), Wire::Meta, 4, key_at, &mut out).is_err(),
                "{bad:?}"
            );
        }
        let mut out = vec![None; 4];
        place_values(values(&[b"a", b"c"]), Wire::Meta, 4, key_at, &mut out).unwrap();
        assert!(out[0].is_some() && out[2].is_none() && out[3].is_some());
        // Only the keys asked of this server count.
        let asked = [0usize, 2, 3];
        let mut out = vec![None; 3];
        let key_of = |m: usize| asked.get(m).and_then(|&i| keys.get(i)).copied();
        assert!(place_values(values(&[b"b"]), Wire::Classic, 3, key_of, &mut out).is_err());
    }
}
