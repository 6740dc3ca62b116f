//! memcached 1.6's meta commands (`mg`, `ms`, `md`, `ma`), each tagged so its reply can be
//! told from any other: an opaque token (`O<n>`, a number the connection never uses twice
//! in a row of 2^32 requests) and the key echoed back (`k`). memcached copies both into the
//! reply (`HD k<key> O<n>`, `VA <len> ... k<key> O<n>`, `EN k<key> O<n>`...), so a reply
//! that is a duplicate of an earlier one, or another connection's, does not carry the tag
//! the request expects: [`Tag::check`] says so, and the connection is dropped.
//!
//! Replies are decoded by [`Decoder`](super::Decoder) with [`Expect::Meta`](super::Expect),
//! which records the tag of each reply ([`Decoder::tag`](super::Decoder::tag)). Error lines
//! (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`) carry no tag.
//!
//! ```
//! use newcache_transport_text::proto::{meta, Decoder, Expect, Meta, Reply};
//! let mut out = Vec::new();
//! meta::encode_get(&mut out, b"user:1", 7);
//! assert_eq!(out, b"mg user:1 v f c k O7\r\n");
//! let mut d = Decoder::new(Expect::Meta);
//! let reply = d.decode(b"EN kuser:1 O7\r\n").unwrap();
//! assert_eq!(reply, Some(Reply::Meta(Meta::Miss)));
//! assert!(d.tag().check(7, b"user:1").is_ok());
//! assert!(d.tag().check(8, b"user:1").is_err(), "a reply to another request");
//! ```

use std::fmt;

use newcache_transport::{StoreMode, MAX_KEY_LEN};

use super::encode::number;
use super::{ParseError, ReplyKey};

/// The key of the probe that tells whether a server speaks the meta protocol
/// ([`encode_probe`]); it is only read, never written.
pub const PROBE_KEY: &[u8] = b"newcache:meta-probe";

/// What a meta reply says it answers: the opaque token (`O`) and the key (`k`) it echoes.
#[derive(Clone, Copy)]
pub struct Tag {
    opaque: Option<u32>,
    /// The key, written in place as a reply is read, so reading a tag copies no more than
    /// the key's own bytes; empty ([`ReplyKey::EMPTY`]) when the reply echoed none.
    key: ReplyKey,
}

impl PartialEq for Tag {
    fn eq(&self, other: &Tag) -> bool {
        self.opaque == other.opaque && self.key() == other.key()
    }
}

impl Eq for Tag {}

impl Default for Tag {
    fn default() -> Tag {
        Tag {
            opaque: None,
            key: ReplyKey::EMPTY,
        }
    }
}

impl Tag {
    /// A tag of this opaque token and key (for tests and tools).
    pub fn new(opaque: Option<u32>, key: Option<&[u8]>) -> Tag {
        let mut tag = Tag {
            opaque,
            ..Tag::default()
        };
        if let Some(key) = key {
            tag.key.set(key);
        }
        tag
    }

    /// No token, no key (as a new tag), in place.
    pub(super) fn clear(&mut self) {
        self.opaque = None;
        self.key.len = 0;
    }

    /// The opaque token the reply echoed, if any.
    pub fn opaque(&self) -> Option<u32> {
        self.opaque
    }

    /// The key the reply echoed, if any.
    pub fn key(&self) -> Option<&[u8]> {
        Some(self.key.as_bytes()).filter(|k| !k.is_empty())
    }

    /// `Ok` when the reply echoes exactly this opaque token and this key: it answers the
    /// request that sent them. Anything else (no tag, another token, another key) is a reply
    /// to another request, and the connection it came on must not be used again.
    pub fn check(&self, opaque: u32, key: &[u8]) -> Result<(), ParseError> {
        if self.opaque == Some(opaque) && self.key() == Some(key) {
            return Ok(());
        }
        Err(ParseError(format!(
            "a reply to another request: expected O{opaque} k{:?}, got {self:?}",
            String::from_utf8_lossy(key)
        )))
    }

    pub(super) fn set_opaque(&mut self, token: &[u8]) -> Result<(), ParseError> {
        self.opaque = Some(parse_opaque(token)?);
        Ok(())
    }

    pub(super) fn set_key(&mut self, key: &[u8]) -> Result<(), ParseError> {
        if !self.key.set(key) {
            return Err(ParseError(format!(
                "a meta reply's key is empty or over {MAX_KEY_LEN} bytes"
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.opaque {
            Some(o) => write!(f, "O{o}")?,
            None => f.write_str("no opaque")?,
        }
        match self.key() {
            Some(_) => write!(f, " k{:?}", self.key),
            None => f.write_str(", no key"),
        }
    }
}

/// An opaque token as this client sends them: a decimal `u32`. Anything else was not sent
/// by it.
fn parse_opaque(token: &[u8]) -> Result<u32, ParseError> {
    // Up to 10 digits: `digits` reads them (it takes up to 19), and the value must fit.
    match super::decode::digits(token).filter(|_| token.len() <= 10) {
        Some(n) => u32::try_from(n).map_err(|_| ParseError("an opaque token over 32 bits".into())),
        None => Err(ParseError(format!(
            "an opaque token this client never sends: {:?}",
            String::from_utf8_lossy(token.get(..token.len().min(40)).unwrap_or_default())
        ))),
    }
}

/// ` k O<opaque>\r\n`: the key echoed back and the opaque token, ending the command line.
fn tag_and_end(out: &mut Vec<u8>, opaque: u32) {
    number(out, b" k O", opaque);
    out.extend_from_slice(b"\r\n");
}

fn command(out: &mut Vec<u8>, name: &[u8], key: &[u8]) {
    out.extend_from_slice(name);
    out.push(b' ');
    out.extend_from_slice(key);
}

/// `mg <key> v f c k O<opaque>`: the value, flags and CAS unique (a `gets`).
pub fn encode_get(out: &mut Vec<u8>, key: &[u8], opaque: u32) {
    command(out, b"mg", key);
    out.extend_from_slice(b" v f c");
    tag_and_end(out, opaque);
}

/// `mg <key> v f c t R<recache_below> k O<opaque>`: the value, flags, CAS and TTL, and the
/// win flag once the TTL drops below `recache_below` seconds or the item is stale.
pub fn encode_meta_get(out: &mut Vec<u8>, key: &[u8], recache_below: u32, opaque: u32) {
    command(out, b"mg", key);
    number(out, b" v f c t R", recache_below);
    tag_and_end(out, opaque);
}

/// `mg <key> T<exptime> k O<opaque>`: a `touch` (`HD` when the key holds an item, `EN`
/// when not).
pub fn encode_touch(out: &mut Vec<u8>, key: &[u8], exptime: u32, opaque: u32) {
    command(out, b"mg", key);
    number(out, b" T", exptime);
    tag_and_end(out, opaque);
}

/// `ms <key> <len> ... k O<opaque>` and the data block: `set` (no mode), `add` (`ME`),
/// `replace` (`MR`), `cas` (`C<unique>`) with flags (`F`) and exptime (`T`); `append`
/// (`MA`) and `prepend` (`MP`) without them, as the classic commands ignore them.
pub fn encode_store(
    out: &mut Vec<u8>,
    mode: StoreMode,
    key: &[u8],
    value: &[u8],
    flags: u32,
    exptime: u32,
    opaque: u32,
) {
    out.reserve(key.len() + value.len() + 64);
    command(out, b"ms", key);
    number(out, b" ", value.len());
    let fields = |out: &mut Vec<u8>| {
        number(out, b" F", flags);
        number(out, b" T", exptime);
    };
    match mode {
        StoreMode::Set => fields(out),
        StoreMode::Add => {
            fields(out);
            out.extend_from_slice(b" ME");
        }
        StoreMode::Replace => {
            fields(out);
            out.extend_from_slice(b" MR");
        }
        StoreMode::Cas(unique) => {
            fields(out);
            number(out, b" C", unique);
        }
        StoreMode::Append => out.extend_from_slice(b" MA"),
        StoreMode::Prepend => out.extend_from_slice(b" MP"),
    }
    tag_and_end(out, opaque);
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `md <key> k O<opaque>` (`HD` deleted, `NF` not found); with `quiet`, `q` too: memcached
/// then leaves out the `HD` reply (a `NF` and errors still come).
pub fn encode_delete(out: &mut Vec<u8>, key: &[u8], quiet: bool, opaque: u32) {
    command(out, b"md", key);
    if quiet {
        out.extend_from_slice(b" q");
    }
    tag_and_end(out, opaque);
}

/// `md <key> I T<grace> [C<cas>] k O<opaque>`: marks the item stale for `grace` seconds
/// instead of deleting it; with `cas`, only the item with that CAS unique (`EX` otherwise).
pub fn encode_invalidate(out: &mut Vec<u8>, key: &[u8], grace: u32, cas: Option<u64>, opaque: u32) {
    command(out, b"md", key);
    number(out, b" I T", grace);
    if let Some(cas) = cas {
        number(out, b" C", cas);
    }
    tag_and_end(out, opaque);
}

/// `ma <key> [MD] D<delta> v k O<opaque>`: `incr` (or `decr`), the new number returned as
/// the value (`VA <len>` and the digits), `NF` when the key holds no item.
pub fn encode_arith(out: &mut Vec<u8>, incr: bool, key: &[u8], delta: u64, opaque: u32) {
    command(out, b"ma", key);
    if !incr {
        out.extend_from_slice(b" MD");
    }
    number(out, b" D", delta);
    out.extend_from_slice(b" v");
    tag_and_end(out, opaque);
}

/// `mg <key> k O<opaque>`: no value, only the tagged `HD` (or `EN`) of a hash lookup. Sent
/// after a classic `gets` of many keys on a meta connection, it closes the `VALUE` block with
/// a reply no earlier request can have had: bytes that were not this request's reply (a
/// duplicate, an older reply) cannot sit between the `gets` and it without breaking the
/// sequence (`VALUE` lines, `END`, this tag), and none can stand in for it. Sent before a
/// `gets` (the first part of a multi-get sent in two), it opens the block the same way: no
/// such bytes can stand before it.
pub fn encode_marker(out: &mut Vec<u8>, key: &[u8], opaque: u32) {
    command(out, b"mg", key);
    tag_and_end(out, opaque);
}

/// The probe sent once per server to learn whether it speaks the meta protocol with tags:
/// `mg newcache:meta-probe k O<opaque>`. memcached 1.6 answers `EN` (or `HD`) with the key
/// and the token; a server without meta answers `ERROR` or `CLIENT_ERROR` (memcached before
/// 1.6), or closes the connection (twemproxy); a reply without the tag means the server
/// cannot be trusted to match replies, and it is spoken to in the classic protocol.
pub fn encode_probe(out: &mut Vec<u8>, opaque: u32) {
    command(out, b"mg", PROBE_KEY);
    tag_and_end(out, opaque);
}

/// The number an `ma ... v` reply carries as its value.
pub fn parse_counter(value: &[u8]) -> Result<u64, ParseError> {
    super::parse_u64(value.trim_ascii(), "ma result")
}

#[cfg(test)]
mod tests {
    use super::super::{Decoder, Expect, Meta, Reply};
    use super::*;

    fn decode(input: &[u8]) -> (Result<Option<Reply>, ParseError>, Tag) {
        let mut d = Decoder::new(Expect::Meta);
        let r = d.decode(input);
        (r, *d.tag())
    }

    /// A decoder writes each reply's tag over the last one's in place: a shorter key, or
    /// none, leaves nothing of the longer one in what the tag says or compares.
    #[test]
    fn each_reply_has_its_own_tag_whatever_the_one_before_held() {
        let mut d = Decoder::new(Expect::Meta);
        let long = "k".repeat(250);
        let first = format!("HD k{long} O1\r\n");
        assert!(d.decode(first.as_bytes()).unwrap().is_some());
        assert_eq!(*d.tag(), Tag::new(Some(1), Some(long.as_bytes())));
        d.reset(Expect::Meta, 0);
        assert!(d.decode(b"HD kab O2\r\n").unwrap().is_some());
        assert_eq!(*d.tag(), Tag::new(Some(2), Some(b"ab")));
        assert_eq!(d.tag().key(), Some(&b"ab"[..]));
        assert!(d.tag().check(2, b"ab").is_ok());
        assert!(d.tag().check(2, long.as_bytes()).is_err());
        d.reset(Expect::Meta, 0);
        assert!(d.decode(b"VA 1 O3\r\nv\r\n").unwrap().is_some());
        assert_eq!(*d.tag(), Tag::new(Some(3), None));
        assert_eq!(d.tag().key(), None);
        assert_eq!(format!("{:?}", d.tag()), "O3, no key");
        let overlong = format!("HD k{long}x O4\r\n");
        d.reset(Expect::Meta, 0);
        assert!(d.decode(overlong.as_bytes()).is_err());
    }

    #[test]
    fn encodes_every_command_with_the_key_and_the_token() {
        let mut out = Vec::new();
        encode_get(&mut out, b"k", 1);
        encode_meta_get(&mut out, b"k", 30, 2);
        encode_touch(&mut out, b"k", 60, 3);
        encode_store(&mut out, StoreMode::Set, b"k", b"v\r\n", 16, 300, 4);
        encode_store(&mut out, StoreMode::Add, b"k", b"", 0, 0, 5);
        encode_store(&mut out, StoreMode::Replace, b"k", b"x", 1, 2, 6);
        encode_store(&mut out, StoreMode::Cas(42), b"k", b"x", 1, 2, 7);
        encode_store(&mut out, StoreMode::Append, b"k", b"x", 1, 2, 8);
        encode_store(&mut out, StoreMode::Prepend, b"k", b"x", 1, 2, 9);
        encode_delete(&mut out, b"k", false, 10);
        encode_delete(&mut out, b"k", true, 11);
        encode_invalidate(&mut out, b"k", 120, None, 12);
        encode_invalidate(&mut out, b"k", 120, Some(77), 12);
        encode_arith(&mut out, true, b"n", 5, 13);
        encode_arith(&mut out, false, b"n", u64::MAX, u32::MAX);
        encode_probe(&mut out, 0);
        encode_marker(&mut out, b"k", 14);
        let expected: &[&str] = &[
            "mg k v f c k O1\r\n",
            "mg k v f c t R30 k O2\r\n",
            "mg k T60 k O3\r\n",
            "ms k 3 F16 T300 k O4\r\nv\r\n\r\n",
            "ms k 0 F0 T0 ME k O5\r\n\r\n",
            "ms k 1 F1 T2 MR k O6\r\nx\r\n",
            "ms k 1 F1 T2 C42 k O7\r\nx\r\n",
            "ms k 1 MA k O8\r\nx\r\n",
            "ms k 1 MP k O9\r\nx\r\n",
            "md k k O10\r\n",
            "md k q k O11\r\n",
            "md k I T120 k O12\r\n",
            "md k I T120 C77 k O12\r\n",
            "ma n D5 v k O13\r\n",
            "ma n MD D18446744073709551615 v k O4294967295\r\n",
            "mg newcache:meta-probe k O0\r\n",
            "mg k k O14\r\n",
        ];
        assert_eq!(String::from_utf8(out).unwrap(), expected.concat());
    }

    #[test]
    fn every_meta_reply_records_its_tag() {
        for (input, reply) in [
            (&b"HD kfoo O7\r\n"[..], Meta::Done),
            (b"EN kfoo O7\r\n", Meta::Miss),
            (b"NF kfoo O7\r\n", Meta::NotFound),
            (b"NS kfoo O7\r\n", Meta::NotStored),
            (b"EX kfoo O7\r\n", Meta::Exists),
            (b"HD O7 kfoo c9\r\n", Meta::Done),
        ] {
            let (r, tag) = decode(input);
            assert_eq!(r, Ok(Some(Reply::Meta(reply))));
            assert_eq!((tag.opaque(), tag.key()), (Some(7), Some(&b"foo"[..])));
            assert!(tag.check(7, b"foo").is_ok());
            assert!(tag.check(6, b"foo").is_err());
            assert!(tag.check(7, b"fo").is_err());
        }
        let (r, tag) = decode(b"VA 3 f5 c2 kfoo O3 W\r\nabc\r\n");
        let Ok(Some(Reply::Meta(Meta::Value(m)))) = r else {
            panic!("a value: {r:?}")
        };
        assert!(m.win && m.item.value == b"abc" && m.item.flags == 5);
        assert!(tag.check(3, b"foo").is_ok());
        // No tag at all (a server that does not echo them): never a match.
        let (_, tag) = decode(b"EN\r\n");
        assert_eq!(tag, Tag::default());
        assert!(tag.check(0, b"foo").is_err());
        // The largest token it sends.
        let (_, tag) = decode(b"HD kfoo O4294967295\r\n");
        assert!(tag.check(u32::MAX, b"foo").is_ok());
        // Tokens this client never sends are errors.
        for bad in [
            &b"HD kfoo Oabc\r\n"[..],
            b"HD kfoo O\r\n",
            b"HD kfoo O4294967296\r\n",
            b"HD kfoo O99999999999\r\n",
            b"HD kfoo O00000000001\r\n",
            b"HD kfoo O+1\r\n",
            b"HD k O1\r\n",
        ] {
            assert!(decode(bad).0.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // Error lines carry no tag.
        let (r, tag) = decode(b"CLIENT_ERROR bad command line format\r\n");
        assert!(matches!(r, Ok(Some(Reply::Status(_)))));
        assert_eq!(tag, Tag::default());
    }

    #[test]
    fn counters_are_parsed_from_the_value() {
        assert_eq!(parse_counter(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_counter(b"5 "), Ok(5));
        assert!(parse_counter(b"x").is_err());
        assert!(parse_counter(b"").is_err());
    }
}
