//! The sans-IO core of memcached's text protocol: requests are encoded into a buffer and
//! replies parsed from one, with no sockets, so blocking and async connections share it.
//!
//! The parser never panics on any input: every length is bounded, every index checked, every
//! number parsed with overflow checks. A reply it cannot make sense of is a [`ParseError`],
//! after which the connection must be dropped.

use std::fmt;
use std::io::Write as _;

use newcache_transport::{Item, MetaItem, StoreMode, MAX_KEY_LEN};

pub mod meta;

/// Longest reply line accepted before its `\r\n` (memcached's lines are far shorter).
pub const MAX_LINE: usize = 8 * 1024;

/// Largest value length accepted in a `VALUE` header (memcached's own maximum item size is
/// 1 GiB).
pub const MAX_VALUE_LEN: usize = 1 << 30;

/// Appends `get`/`gets` for these keys (`gets` when `cas` is true).
pub fn encode_get(out: &mut Vec<u8>, keys: &[&[u8]], cas: bool) {
    out.extend_from_slice(if cas { b"gets" } else { b"get" });
    for key in keys {
        out.push(b' ');
        out.extend_from_slice(key);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a storage command: `set|add|replace|append|prepend <key> <flags> <exptime> <bytes>`
/// (`cas ... <unique>`), an optional `noreply`, and the data block.
pub fn encode_store(
    out: &mut Vec<u8>,
    mode: StoreMode,
    key: &[u8],
    value: &[u8],
    flags: u32,
    exptime: u32,
    noreply: bool,
) {
    out.reserve(key.len() + value.len() + 64);
    out.extend_from_slice(mode.command().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    // Writing to a Vec cannot fail.
    let _ = write!(out, " {flags} {exptime} {}", value.len());
    if let StoreMode::Cas(unique) = mode {
        let _ = write!(out, " {unique}");
    }
    if noreply {
        out.extend_from_slice(b" noreply");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `delete <key>`.
pub fn encode_delete(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"delete ");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n");
}

/// Appends `delete <key> noreply`: memcached sends no reply to it (not even an error).
pub fn encode_delete_noreply(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"delete ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" noreply\r\n");
}

/// Appends `incr <key> <delta>` (or `decr`).
pub fn encode_arith(out: &mut Vec<u8>, incr: bool, key: &[u8], delta: u64) {
    out.extend_from_slice(if incr { b"incr " } else { b"decr " });
    out.extend_from_slice(key);
    let _ = write!(out, " {delta}\r\n");
}

/// Appends `touch <key> <exptime>`.
pub fn encode_touch(out: &mut Vec<u8>, key: &[u8], exptime: u32) {
    out.extend_from_slice(b"touch ");
    out.extend_from_slice(key);
    let _ = write!(out, " {exptime}\r\n");
}

/// Appends a meta get returning value, flags, CAS and TTL, with recache (win) below
/// `recache_below` seconds of TTL: `mg <key> v f c t R<n>`.
pub fn encode_meta_get(out: &mut Vec<u8>, key: &[u8], recache_below: u32) {
    out.extend_from_slice(b"mg ");
    out.extend_from_slice(key);
    let _ = write!(out, " v f c t R{recache_below}\r\n");
}

/// Appends a meta delete that marks the item stale for `grace` seconds: `md <key> I T<grace>`.
pub fn encode_meta_invalidate(out: &mut Vec<u8>, key: &[u8], grace: u32) {
    out.extend_from_slice(b"md ");
    out.extend_from_slice(key);
    let _ = write!(out, " I T{grace}\r\n");
}

/// Appends a bare command line such as `flush_all`, `stats` or `version`.
pub fn encode_line(out: &mut Vec<u8>, command: &str) {
    out.extend_from_slice(command.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A one-line reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `STORED`
    Stored,
    /// `NOT_STORED`
    NotStored,
    /// `EXISTS`
    Exists,
    /// `NOT_FOUND`
    NotFound,
    /// `DELETED`
    Deleted,
    /// `TOUCHED`
    Touched,
    /// `OK`
    Ok,
    /// `END` (an empty multi-line reply)
    End,
    /// The number an `incr`/`decr` left.
    Number(u64),
    /// `VERSION <v>`
    Version(String),
    /// `ERROR`: the server does not know the command.
    Error,
    /// `CLIENT_ERROR <msg>`
    ClientError(String),
    /// `SERVER_ERROR <msg>`
    ServerError(String),
}

/// A key as a `VALUE` line names it, kept inline: reading it allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReplyKey {
    len: u8,
    bytes: [u8; MAX_KEY_LEN],
}

impl ReplyKey {
    /// The key, or `None` when it is empty or longer than memcached allows.
    pub fn new(key: &[u8]) -> Option<ReplyKey> {
        let len = u8::try_from(key.len()).ok().filter(|&l| l > 0)?;
        let mut bytes = [0u8; MAX_KEY_LEN];
        bytes.get_mut(..key.len())?.copy_from_slice(key);
        Some(ReplyKey { len, bytes })
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl fmt::Debug for ReplyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The `VALUE` blocks of one reply, in order. The first is kept inline, so a one-key get
/// allocates nothing but its value; the keys of the others share one buffer, so a multi-get
/// of n keys allocates n values and two lists, and moves no key more than once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Values {
    first: Option<(ReplyKey, Item)>,
    /// The keys of `rest`, one after another.
    rest_keys: Vec<u8>,
    /// Each later value and where its key ends in `rest_keys` (it starts where the one
    /// before ends).
    rest: Vec<(usize, Item)>,
}

/// Bytes reserved per key of a multi-get's reply (newcache's own keys are 43 to 60).
const KEY_ROOM: usize = 64;

impl Values {
    /// Room for `n` values without reallocating.
    pub fn with_capacity(n: usize) -> Values {
        let rest = n.saturating_sub(1);
        Values {
            first: None,
            rest_keys: Vec::with_capacity(rest.saturating_mul(KEY_ROOM)),
            rest: Vec::with_capacity(rest),
        }
    }

    /// Adds a value; `None` (and nothing added) when the key is empty or longer than
    /// memcached allows.
    pub(crate) fn push(&mut self, key: &[u8], item: Item) -> Option<()> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return None;
        }
        if self.first.is_none() {
            self.first = Some((ReplyKey::new(key)?, item));
        } else {
            self.rest_keys.extend_from_slice(key);
            self.rest.push((self.rest_keys.len(), item));
        }
        Some(())
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// True when the reply held no value (`END` alone).
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Each key and its item, in the reply's order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Item)> + '_ {
        let mut start = 0;
        let rest = self.rest.iter().map(move |(end, item)| {
            let key = self.rest_keys.get(start..*end).unwrap_or_default();
            start = *end;
            (key, item)
        });
        self.first
            .iter()
            .map(|(k, item)| (k.as_bytes(), item))
            .chain(rest)
    }

    /// Hands each key and its item to `each`, in the reply's order, until `each` fails.
    pub fn try_for_each<E>(
        self,
        mut each: impl FnMut(&[u8], Item) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some((key, item)) = self.first {
            each(key.as_bytes(), item)?;
        }
        let mut start = 0;
        for (end, item) in self.rest {
            each(self.rest_keys.get(start..end).unwrap_or_default(), item)?;
            start = end;
        }
        Ok(())
    }
}

/// A complete reply.
// `Values` keeps its first key and item inline (about 330 bytes) so a one-key get allocates
// nothing but its value; boxing it would cost an allocation per reply.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// One status line.
    Status(Status),
    /// `VALUE` blocks up to `END`, as (key, item).
    Values(Values),
    /// `STAT` lines up to `END`.
    Stats(Vec<(String, String)>),
    /// A meta command's reply.
    Meta(Meta),
}

/// A meta command's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    /// `VA <size> <flags>`: a value.
    Value(MetaItem),
    /// `HD`: success without a value.
    Done,
    /// `EN`: miss.
    Miss,
    /// `NF`: not found.
    NotFound,
    /// `NS`: not stored.
    NotStored,
    /// `EX`: exists (CAS mismatch).
    Exists,
}

/// What reply a request expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A status line (store, delete, incr/decr, touch, flush_all, version).
    Status,
    /// `VALUE` blocks then `END` (get/gets), or an error line.
    Values,
    /// `STAT` lines then `END` (stats), or an error line.
    Stats,
    /// A meta command's reply (`VA`, `HD`, `EN`, `NF`, `NS`, `EX`), or an error line.
    Meta,
}

/// A reply that is not memcached's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

fn shown(bytes: &[u8]) -> String {
    let cut = bytes.get(..bytes.len().min(80)).unwrap_or_default();
    String::from_utf8_lossy(cut).escape_debug().to_string()
}

/// Finds the next `\r\n`-terminated line at `buf[pos..]`: `Ok(Some((line, next_pos)))`,
/// `Ok(None)` when more bytes are needed.
fn line(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, ParseError> {
    let rest = buf.get(pos..).unwrap_or_default();
    match memchr::memchr(b'\n', rest) {
        Some(nl) => {
            let with_cr = rest.get(..nl).unwrap_or_default();
            let Some(text) = with_cr.strip_suffix(b"\r") else {
                return err(format!("line without \\r before \\n: {:?}", shown(with_cr)));
            };
            Ok(Some((text, pos + nl + 1)))
        }
        None if rest.len() > MAX_LINE => err(format!(
            "no end of line in the first {MAX_LINE} bytes: {:?}",
            shown(rest)
        )),
        None => Ok(None),
    }
}

fn parse_u64(field: &[u8], what: &str) -> Result<u64, ParseError> {
    if field.is_empty() || field.len() > 20 {
        return not_a_number(field, what);
    }
    let mut n: u64 = 0;
    for &b in field {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return not_a_number(field, what);
        }
        n = match n
            .checked_mul(10)
            .and_then(|a| a.checked_add(u64::from(digit)))
        {
            Some(n) => n,
            None => return err(format!("{what} overflows: {:?}", shown(field))),
        };
    }
    Ok(n)
}

#[cold]
fn not_a_number<T>(field: &[u8], what: &str) -> Result<T, ParseError> {
    err(format!("{what} is not a number: {:?}", shown(field)))
}

fn text_after(line: &[u8], prefix: &[u8]) -> String {
    String::from_utf8_lossy(line.get(prefix.len()..).unwrap_or_default())
        .trim()
        .to_string()
}

/// Parses one status line (without its `\r\n`).
pub fn parse_status(line: &[u8]) -> Result<Status, ParseError> {
    Ok(match line {
        b"STORED" => Status::Stored,
        b"NOT_STORED" => Status::NotStored,
        b"EXISTS" => Status::Exists,
        b"NOT_FOUND" => Status::NotFound,
        b"DELETED" => Status::Deleted,
        b"TOUCHED" => Status::Touched,
        b"OK" => Status::Ok,
        b"END" => Status::End,
        b"ERROR" => Status::Error,
        l if l.starts_with(b"CLIENT_ERROR") => Status::ClientError(text_after(l, b"CLIENT_ERROR")),
        l if l.starts_with(b"SERVER_ERROR") => Status::ServerError(text_after(l, b"SERVER_ERROR")),
        l if l.starts_with(b"VERSION ") => Status::Version(text_after(l, b"VERSION ")),
        // Old servers pad decr results with spaces.
        l if l.first().is_some_and(u8::is_ascii_digit) => {
            let digits = l.strip_suffix(b" ").map_or(l, |_| l.trim_ascii_end());
            Status::Number(parse_u64(digits, "incr/decr result")?)
        }
        l => return err(format!("unexpected reply line {:?}", shown(l))),
    })
}

/// An incremental reply decoder, fed the bytes of one reply as they arrive.
///
/// Each call to [`Decoder::decode`] parses what it can of the bytes given, which must start
/// at the first byte the decoder has not consumed yet, and says how many of them it consumed
/// ([`Decoder::consumed`]): the caller drops those before the next call, which gets the
/// rest and whatever arrived since. Lines and values are consumed as they are parsed, so a
/// reply of many values never needs a buffer of its size, and nothing is parsed twice.
///
/// A value whose data block has not fully arrived goes at once into the `Vec` that becomes
/// the item's value, allocated at its final size: the bytes already given are copied into
/// it, and the caller may read the rest from the socket straight into it
/// ([`Decoder::value_spare`], then [`Decoder::value_filled`]) instead of into its own
/// buffer, so a large value is copied once, by the kernel, into the buffer it is returned
/// in.
#[derive(Debug)]
pub struct Decoder {
    expect: Expect,
    pos: usize,
    values: Values,
    stats: Vec<(String, String)>,
    /// A value whose data block is still arriving.
    partial: Option<Partial>,
    /// The opaque token and key the last meta reply line echoed.
    tag: meta::Tag,
}

/// A value whose data block is still arriving: the item, its value already at its final
/// length, and how many of its bytes arrived.
#[derive(Debug)]
struct Partial {
    of: PartialOf,
    filled: usize,
}

/// What a value still arriving belongs to.
// The key is kept inline, as in `Values`, so a value arriving in pieces allocates nothing
// but itself.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum PartialOf {
    /// A `VALUE` block of a get reply.
    Value(ReplyKey, Item),
    /// The value of a meta reply (`VA`).
    Meta(MetaItem),
}

impl Partial {
    fn value(&mut self) -> &mut Vec<u8> {
        match &mut self.of {
            PartialOf::Value(_, item) => &mut item.value,
            PartialOf::Meta(meta) => &mut meta.item.value,
        }
    }

    /// The value's bytes still to come.
    fn spare(&mut self) -> &mut [u8] {
        let filled = self.filled;
        self.value().get_mut(filled..).unwrap_or_default()
    }
}

/// What feeding a value still arriving came to.
enum Fed {
    /// More bytes are needed.
    More,
    /// The value is complete and was added to the reply's values: parse on.
    Next,
    /// The value completed the reply: a meta value.
    Done(MetaItem),
}

impl Decoder {
    /// A decoder for a reply of this kind.
    pub fn new(expect: Expect) -> Self {
        Decoder {
            expect,
            pos: 0,
            values: Values::default(),
            stats: Vec::new(),
            partial: None,
            tag: meta::Tag::default(),
        }
    }

    /// A decoder for a reply of this kind that expects about `values` values (a multi-get's
    /// key count), so collecting them does not reallocate.
    pub fn with_capacity(expect: Expect, values: usize) -> Self {
        Decoder {
            values: Values::with_capacity(values),
            ..Decoder::new(expect)
        }
    }

    /// The opaque token (`O`) and key (`k`) the meta reply echoed (empty until a meta reply
    /// line was parsed, and for error lines): check it with [`meta::Tag::check`] before
    /// taking the reply as the answer to a request.
    pub fn tag(&self) -> &meta::Tag {
        &self.tag
    }

    /// Bytes of the buffer the last [`Decoder::decode`] consumed: drop them before the next
    /// call. After a complete reply, the bytes from there on belong to the next reply.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// The bytes still to come of a value whose data block is arriving (empty or `None`
    /// when there is none): read the socket straight into them and report how many arrived
    /// with [`Decoder::value_filled`], or give the bytes to [`Decoder::decode`] as usual.
    pub fn value_spare(&mut self) -> Option<&mut [u8]> {
        self.partial.as_mut().map(Partial::spare)
    }

    /// Records that the first `n` bytes of [`Decoder::value_spare`] were filled (at most
    /// as many as it had).
    pub fn value_filled(&mut self, n: usize) {
        if let Some(p) = self.partial.as_mut() {
            p.filled = p.filled.saturating_add(n).min(p.value().len());
        }
    }

    /// Parses what it can of `buf`, which starts at the first byte not consumed yet (see
    /// [`Decoder::consumed`]). `Ok(Some(reply))` when the reply is complete; `Ok(None)`
    /// when more bytes are needed.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<Reply>, ParseError> {
        self.pos = 0;
        match self.feed(buf)? {
            Fed::More => return Ok(None),
            Fed::Done(meta) => return Ok(Some(Reply::Meta(Meta::Value(meta)))),
            Fed::Next => {}
        }
        loop {
            let Some((text, next)) = line(buf, self.pos)? else {
                return Ok(None);
            };
            match self.expect {
                Expect::Status => {
                    let status = parse_status(text)?;
                    self.pos = next;
                    return Ok(Some(Reply::Status(status)));
                }
                Expect::Values => {
                    if text == b"END" {
                        self.pos = next;
                        return Ok(Some(Reply::Values(std::mem::take(&mut self.values))));
                    }
                    if !text.starts_with(b"VALUE ") {
                        let status = parse_status(text)?;
                        if matches!(
                            status,
                            Status::Error | Status::ClientError(_) | Status::ServerError(_)
                        ) {
                            self.pos = next;
                            return Ok(Some(Reply::Status(status)));
                        }
                        return err(format!("expected VALUE or END, got {:?}", shown(text)));
                    }
                    let (key, flags, len, cas) = parse_value_header(text)?;
                    let Some((data, after)) = data_block(buf, next, len)? else {
                        let item = Item {
                            value: vec![0; len],
                            flags,
                            cas,
                        };
                        self.pos = next;
                        let key = ReplyKey::new(key).ok_or_else(|| bad_key(text))?;
                        match self.start(buf, PartialOf::Value(key, item))? {
                            Fed::More => return Ok(None),
                            Fed::Done(meta) => return Ok(Some(Reply::Meta(Meta::Value(meta)))),
                            Fed::Next => continue,
                        }
                    };
                    let item = Item {
                        value: data.to_vec(),
                        flags,
                        cas,
                    };
                    self.values.push(key, item).ok_or_else(|| bad_key(text))?;
                    self.pos = after;
                }
                Expect::Meta => {
                    let mut fields = text.split(|&b| b == b' ');
                    let code = fields.next().unwrap_or_default();
                    let simple = match code {
                        b"HD" => Some(Meta::Done),
                        b"EN" => Some(Meta::Miss),
                        b"NF" => Some(Meta::NotFound),
                        b"NS" => Some(Meta::NotStored),
                        b"EX" => Some(Meta::Exists),
                        _ => None,
                    };
                    if let Some(meta) = simple {
                        let mut tag = meta::Tag::default();
                        for flag in fields {
                            match flag.split_first() {
                                Some((b'O', v)) => tag.set_opaque(v)?,
                                Some((b'k', v)) => tag.set_key(v)?,
                                _ => {}
                            }
                        }
                        self.tag = tag;
                        self.pos = next;
                        return Ok(Some(Reply::Meta(meta)));
                    }
                    if code != b"VA" {
                        let status = parse_status(text)?;
                        if matches!(
                            status,
                            Status::Error | Status::ClientError(_) | Status::ServerError(_)
                        ) {
                            self.pos = next;
                            return Ok(Some(Reply::Status(status)));
                        }
                        return err(format!("expected a meta reply, got {:?}", shown(text)));
                    }
                    let len = fields
                        .next()
                        .map(|f| parse_u64(f, "meta value length"))
                        .transpose()?
                        .and_then(|l| usize::try_from(l).ok())
                        .filter(|&l| l <= MAX_VALUE_LEN)
                        .ok_or_else(|| ParseError(format!("bad VA line {:?}", shown(text))))?;
                    let mut meta = MetaItem {
                        item: Item {
                            value: Vec::new(),
                            flags: 0,
                            cas: None,
                        },
                        win: false,
                        stale: false,
                        win_taken: false,
                    };
                    let mut tag = meta::Tag::default();
                    for flag in fields {
                        match flag.split_first() {
                            Some((b'f', v)) => {
                                meta.item.flags = u32::try_from(parse_u64(v, "flags")?)
                                    .map_err(|_| ParseError("flags over 32 bits".into()))?
                            }
                            Some((b'c', v)) => meta.item.cas = Some(parse_u64(v, "cas")?),
                            Some((b'W', _)) => meta.win = true,
                            Some((b'X', _)) => meta.stale = true,
                            Some((b'Z', _)) => meta.win_taken = true,
                            Some((b'O', v)) => tag.set_opaque(v)?,
                            Some((b'k', v)) => tag.set_key(v)?,
                            _ => {}
                        }
                    }
                    self.tag = tag;
                    let Some((data, after)) = data_block(buf, next, len)? else {
                        meta.item.value = vec![0; len];
                        self.pos = next;
                        return match self.start(buf, PartialOf::Meta(meta))? {
                            Fed::More | Fed::Next => Ok(None),
                            Fed::Done(meta) => Ok(Some(Reply::Meta(Meta::Value(meta)))),
                        };
                    };
                    meta.item.value = data.to_vec();
                    self.pos = after;
                    return Ok(Some(Reply::Meta(Meta::Value(meta))));
                }
                Expect::Stats => {
                    if text == b"END" {
                        self.pos = next;
                        return Ok(Some(Reply::Stats(std::mem::take(&mut self.stats))));
                    }
                    if let Some(rest) = text.strip_prefix(b"STAT ") {
                        let rest = String::from_utf8_lossy(rest);
                        let (name, value) = rest.split_once(' ').unwrap_or((&rest, ""));
                        self.stats.push((name.to_string(), value.to_string()));
                        self.pos = next;
                        continue;
                    }
                    let status = parse_status(text)?;
                    if matches!(
                        status,
                        Status::Error | Status::ClientError(_) | Status::ServerError(_)
                    ) {
                        self.pos = next;
                        return Ok(Some(Reply::Status(status)));
                    }
                    return err(format!("expected STAT or END, got {:?}", shown(text)));
                }
            }
        }
    }
}

impl Decoder {
    /// Starts a value whose data block begins at `buf[self.pos..]` but has not fully arrived.
    fn start(&mut self, buf: &[u8], of: PartialOf) -> Result<Fed, ParseError> {
        self.partial = Some(Partial { of, filled: 0 });
        self.feed(buf)
    }

    /// Feeds the value still arriving, if any, from `buf[self.pos..]`, and its `\r\n`.
    fn feed(&mut self, buf: &[u8]) -> Result<Fed, ParseError> {
        let Some(partial) = self.partial.as_mut() else {
            return Ok(Fed::Next);
        };
        let given = buf.get(self.pos..).unwrap_or_default();
        let spare = partial.spare();
        let n = spare.len().min(given.len());
        if let (Some(dst), Some(src)) = (spare.get_mut(..n), given.get(..n)) {
            dst.copy_from_slice(src);
        }
        partial.filled += n;
        self.pos += n;
        if !partial.spare().is_empty() {
            return Ok(Fed::More);
        }
        let len = partial.filled;
        match buf.get(self.pos..).unwrap_or_default() {
            [b'\r', b'\n', ..] => self.pos += 2,
            [] | [b'\r'] => return Ok(Fed::More),
            _ => return err(format!("a value of {len} bytes is not followed by \\r\\n")),
        }
        match self.partial.take().map(|p| p.of) {
            Some(PartialOf::Value(key, item)) => {
                self.values
                    .push(key.as_bytes(), item)
                    .ok_or_else(|| bad_key(key.as_bytes()))?;
                Ok(Fed::Next)
            }
            Some(PartialOf::Meta(meta)) => Ok(Fed::Done(meta)),
            None => Ok(Fed::Next),
        }
    }
}

/// The `len` data bytes at `buf[start..]` and the `\r\n` after them: `Ok(Some((data,
/// position after the \r\n)))`, `Ok(None)` when more bytes are needed.
fn data_block(buf: &[u8], start: usize, len: usize) -> Result<Option<(&[u8], usize)>, ParseError> {
    let end = start
        .checked_add(len)
        .and_then(|e| e.checked_add(2))
        .ok_or_else(|| ParseError("value length overflows".into()))?;
    let Some(block) = buf.get(start..end) else {
        return Ok(None);
    };
    let (data, crlf) = block.split_at(len);
    if crlf != b"\r\n" {
        return err(format!("a value of {len} bytes is not followed by \\r\\n"));
    }
    Ok(Some((data, end)))
}

/// The error for a `VALUE` line whose key is empty or too long.
fn bad_key(text: &[u8]) -> ParseError {
    ParseError(format!(
        "a VALUE key empty or over {MAX_KEY_LEN} bytes in {:?}",
        shown(text)
    ))
}

/// A `VALUE` line's key, flags, value length and CAS unique.
type ValueHeader<'a> = (&'a [u8], u32, usize, Option<u64>);

/// `VALUE <key> <flags> <bytes> [<cas unique>]`
fn parse_value_header(text: &[u8]) -> Result<ValueHeader<'_>, ParseError> {
    let short = || ParseError(format!("short VALUE line {:?}", shown(text)));
    let fields = text.get(b"VALUE ".len()..).ok_or_else(short)?;
    let mut spaces = memchr::memchr_iter(b' ', fields);
    let (Some(key_end), Some(flags_end)) = (spaces.next(), spaces.next()) else {
        return Err(short());
    };
    let len_end = spaces.next();
    let cas_end = len_end.and(spaces.next());
    let field = |from: usize, to: Option<usize>| match to {
        Some(to) => fields.get(from..to).unwrap_or_default(),
        None => fields.get(from..).unwrap_or_default(),
    };
    let key = field(0, Some(key_end));
    let flags = field(key_end + 1, Some(flags_end));
    let len = field(flags_end + 1, len_end);
    let cas = len_end
        .map(|at| parse_u64(field(at + 1, cas_end), "cas unique"))
        .transpose()?;
    if cas_end.is_some() || key.is_empty() {
        return err(format!("malformed VALUE line {:?}", shown(text)));
    }
    let flags = u32::try_from(parse_u64(flags, "flags")?)
        .map_err(|_| ParseError(format!("flags over 32 bits in {:?}", shown(text))))?;
    let len = usize::try_from(parse_u64(len, "value length")?)
        .ok()
        .filter(|&l| l <= MAX_VALUE_LEN)
        .ok_or_else(|| ParseError(format!("value length too large in {:?}", shown(text))))?;
    if key.len() > MAX_KEY_LEN {
        return Err(bad_key(text));
    }
    Ok((key, flags, len, cas))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(expect: Expect, input: &[u8]) -> Result<Option<(Reply, usize)>, ParseError> {
        let mut d = Decoder::new(expect);
        Ok(d.decode(input)?.map(|r| (r, d.consumed())))
    }

    /// Feeds `input` as a caller does, one byte more at a time and the consumed bytes
    /// dropped after every call: no prefix is a complete reply, the whole is, and the
    /// result equals a one-shot decode.
    fn split_everywhere(expect: Expect, input: &[u8]) -> Reply {
        let mut d = Decoder::new(expect);
        let mut start = 0;
        for end in 0..input.len() {
            assert_eq!(
                d.decode(&input[start..end]).unwrap(),
                None,
                "prefix of {end} bytes"
            );
            start += d.consumed();
            assert!(start <= end);
        }
        let reply = d.decode(&input[start..]).unwrap().expect("complete");
        assert_eq!(start + d.consumed(), input.len());
        assert_eq!(decode_all(expect, input).unwrap().unwrap().0, reply);
        reply
    }

    /// Feeds `input` in chunks of `chunk` bytes, reading the rest of a value that is
    /// arriving straight into it (as the transport does for large values) whenever
    /// `direct` says so.
    fn decode_in_chunks(expect: Expect, input: &[u8], chunk: usize, direct: bool) -> Reply {
        let mut d = Decoder::new(expect);
        let mut buf: Vec<u8> = Vec::new();
        let mut at = 0;
        loop {
            if let Some(reply) = d.decode(&buf).unwrap() {
                buf.drain(..d.consumed());
                assert!(buf.is_empty() && at == input.len(), "{} left", buf.len());
                return reply;
            }
            buf.drain(..d.consumed());
            assert!(
                buf.len() <= MAX_LINE + 1,
                "the buffer holds {} bytes",
                buf.len()
            );
            assert!(
                at < input.len(),
                "the whole input did not complete the reply"
            );
            let n = chunk.min(input.len() - at);
            match d.value_spare().filter(|v| direct && !v.is_empty()) {
                Some(spare) => {
                    let n = n.min(spare.len());
                    spare[..n].copy_from_slice(&input[at..at + n]);
                    d.value_filled(n);
                    at += n;
                }
                None => {
                    buf.extend_from_slice(&input[at..at + n]);
                    at += n;
                }
            }
        }
    }

    #[test]
    fn large_values_arrive_in_pieces_into_their_own_buffer() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut input = b"VALUE a 1 3 5\r\nabc\r\n".to_vec();
        input.extend_from_slice(format!("VALUE big 7 {}\r\n", big.len()).as_bytes());
        input.extend_from_slice(&big);
        input.extend_from_slice(b"\r\nVALUE z 0 2\r\nzz\r\nEND\r\n");
        for chunk in [1, 7, 4096, 16 * 1024, 1 << 20] {
            for direct in [false, true] {
                let Reply::Values(values) = decode_in_chunks(Expect::Values, &input, chunk, direct)
                else {
                    panic!("values expected")
                };
                let values: Vec<_> = values.iter().collect();
                assert_eq!(values.len(), 3, "chunk {chunk}");
                assert_eq!(values[1].0, b"big");
                assert!(values[1].1.value == big, "chunk {chunk} direct {direct}");
                assert_eq!(values[1].1.flags, 7);
                assert_eq!(values[2].1.value, b"zz");
            }
        }
        let mut meta = format!("VA {} f5 c9\r\n", big.len()).into_bytes();
        meta.extend_from_slice(&big);
        meta.extend_from_slice(b"\r\n");
        for chunk in [1, 5000, 1 << 20] {
            let Reply::Meta(Meta::Value(m)) = decode_in_chunks(Expect::Meta, &meta, chunk, true)
            else {
                panic!("a meta value expected")
            };
            assert!(m.item.value == big && m.item.flags == 5 && m.item.cas == Some(9));
        }
        // A value not followed by \r\n is an error however it arrived.
        let mut d = Decoder::new(Expect::Values);
        assert_eq!(d.decode(b"VALUE k 0 3\r\nab").unwrap(), None);
        assert_eq!(d.consumed(), 15);
        assert!(d.decode(b"cXX").is_err());
        // value_filled never counts past the value.
        let mut d = Decoder::new(Expect::Values);
        assert_eq!(d.decode(b"VALUE k 0 3\r\n").unwrap(), None);
        assert_eq!(d.value_spare().map(|s| s.len()), Some(3));
        d.value_filled(99);
        assert_eq!(d.value_spare().map(|s| s.len()), Some(0));
        let reply = d.decode(b"\r\nEND\r\n").unwrap().unwrap();
        let Reply::Values(v) = reply else { panic!() };
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn encodes_requests() {
        let mut out = Vec::new();
        encode_get(&mut out, &[b"a", b"b"], true);
        encode_store(&mut out, StoreMode::Set, b"k", b"v\r\n", 16, 300, false);
        encode_store(&mut out, StoreMode::Cas(42), b"k", b"", 0, 0, true);
        encode_delete(&mut out, b"k");
        encode_arith(&mut out, false, b"n", 7);
        encode_touch(&mut out, b"k", 9);
        encode_line(&mut out, "flush_all");
        assert_eq!(
            out,
            b"gets a b\r\nset k 16 300 3\r\nv\r\n\r\ncas k 0 0 0 42 noreply\r\n\r\ndelete k\r\ndecr n 7\r\ntouch k 9\r\nflush_all\r\n"
        );
    }

    #[test]
    fn parses_every_status_line() {
        for (line, status) in [
            (&b"STORED\r\n"[..], Status::Stored),
            (b"NOT_STORED\r\n", Status::NotStored),
            (b"EXISTS\r\n", Status::Exists),
            (b"NOT_FOUND\r\n", Status::NotFound),
            (b"DELETED\r\n", Status::Deleted),
            (b"TOUCHED\r\n", Status::Touched),
            (b"OK\r\n", Status::Ok),
            (b"ERROR\r\n", Status::Error),
            (b"18446744073709551615\r\n", Status::Number(u64::MAX)),
            (b"5  \r\n", Status::Number(5)),
            (b"VERSION 1.6.18\r\n", Status::Version("1.6.18".into())),
            (
                b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
                Status::ClientError("cannot increment or decrement non-numeric value".into()),
            ),
            (
                b"SERVER_ERROR object too large for cache\r\n",
                Status::ServerError("object too large for cache".into()),
            ),
        ] {
            assert_eq!(
                split_everywhere(Expect::Status, line),
                Reply::Status(status)
            );
        }
    }

    #[test]
    fn parses_values_with_and_without_cas() {
        let input = b"VALUE a 16 5 77\r\nhello\r\nVALUE b 4294967295 4\r\n\r\n\x00\xff\r\nEND\r\n";
        let Reply::Values(values) = split_everywhere(Expect::Values, input) else {
            panic!("values expected")
        };
        assert_eq!(values.len(), 2);
        let values: Vec<_> = values.iter().collect();
        assert_eq!(values[0].0, b"a");
        assert_eq!(
            *values[0].1,
            Item {
                value: b"hello".to_vec(),
                flags: 16,
                cas: Some(77)
            }
        );
        assert_eq!(
            *values[1].1,
            Item {
                value: b"\r\n\x00\xff".to_vec(),
                flags: u32::MAX,
                cas: None
            }
        );
        assert_eq!(
            split_everywhere(Expect::Values, b"END\r\n"),
            Reply::Values(Values::default())
        );
        assert_eq!(
            split_everywhere(Expect::Values, b"SERVER_ERROR out of memory\r\n"),
            Reply::Status(Status::ServerError("out of memory".into()))
        );
    }

    #[test]
    fn a_reply_stops_where_it_ends() {
        let (reply, used) = decode_all(Expect::Status, b"STORED\r\nDELETED\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((reply, used), (Reply::Status(Status::Stored), 8));
        let (_, used) = decode_all(Expect::Values, b"END\r\nSTORED\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(used, 5);
    }

    #[test]
    fn parses_meta_replies() {
        let reply = split_everywhere(Expect::Meta, b"VA 3 f272 c2 t30 Z X\r\nabc\r\n");
        let Reply::Meta(Meta::Value(m)) = reply else {
            panic!("a value")
        };
        assert_eq!(
            (m.item.value.as_slice(), m.item.flags, m.item.cas),
            (&b"abc"[..], 272, Some(2))
        );
        assert!(m.stale && m.win_taken && !m.win);
        let Reply::Meta(Meta::Value(m)) =
            split_everywhere(Expect::Meta, b"VA 0 f0 c1 t-1 W\r\n\r\n")
        else {
            panic!("a value")
        };
        assert!(m.win && m.item.value.is_empty());
        for (input, meta) in [
            (&b"EN\r\n"[..], Meta::Miss),
            (b"HD\r\n", Meta::Done),
            (b"HD c5\r\n", Meta::Done),
            (b"NF\r\n", Meta::NotFound),
            (b"NS\r\n", Meta::NotStored),
            (b"EX\r\n", Meta::Exists),
        ] {
            assert_eq!(split_everywhere(Expect::Meta, input), Reply::Meta(meta));
        }
        assert_eq!(
            split_everywhere(Expect::Meta, b"ERROR\r\n"),
            Reply::Status(Status::Error)
        );
        for bad in [
            &b"VA x\r\n"[..],
            b"VA 1 fz\r\nv\r\n",
            b"VA 1\r\nvXX",
            b"STORED\r\n",
            b"VA\r\n",
        ] {
            assert!(
                decode_all(Expect::Meta, bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut out = Vec::new();
        encode_meta_get(&mut out, b"k", 60);
        encode_meta_invalidate(&mut out, b"k", 120);
        assert_eq!(out, b"mg k v f c t R60\r\nmd k I T120\r\n");
    }

    #[test]
    fn parses_stats() {
        let input = b"STAT pid 1\r\nSTAT version 1.6.18\r\nSTAT rusage_user 0.1 extra\r\nEND\r\n";
        assert_eq!(
            split_everywhere(Expect::Stats, input),
            Reply::Stats(vec![
                ("pid".into(), "1".into()),
                ("version".into(), "1.6.18".into()),
                ("rusage_user".into(), "0.1 extra".into()),
            ])
        );
    }

    #[test]
    fn garbage_is_a_parse_error() {
        for bad in [
            &b"HELLO\r\n"[..],
            b"STORED\n",
            b"VALUE a 0\r\n",
            b"VALUE a x 1\r\nv\r\nEND\r\n",
            b"VALUE a 0 1 2 3\r\nv\r\nEND\r\n",
            b"VALUE a 4294967296 1\r\nv\r\nEND\r\n",
            b"VALUE a 0 99999999999999999999999\r\n",
            b"VALUE a 0 2000000000\r\n",
            b"VALUE a 0 1\r\nvXX",
            b"VALUE  0 1\r\nv\r\nEND\r\n",
            b"99999999999999999999999\r\n",
            b"STORED\r\n",
        ] {
            let expect = if bad.starts_with(b"VALUE") || bad == b"STORED\r\n" {
                Expect::Values
            } else {
                Expect::Status
            };
            assert!(
                decode_all(expect, bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'x'; MAX_LINE + 1];
        assert!(decode_all(Expect::Status, &long).is_err());
        assert!(decode_all(Expect::Stats, b"STORED\r\n").is_err());
    }

    #[test]
    fn never_panics_on_mutated_or_random_input() {
        let seeds: [&[u8]; 4] = [
            b"VALUE a 16 5 77\r\nhello\r\nVALUE b 0 1\r\nx\r\nEND\r\n",
            b"STAT pid 1\r\nEND\r\n",
            b"18446744073709551615\r\n",
            b"CLIENT_ERROR bad\r\n",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let r = next();
                let i = (r as usize >> 8) % (input.len() + 1);
                match r % 4 {
                    0 if i < input.len() => input[i] = (r >> 32) as u8,
                    1 => input.insert(i, (r >> 40) as u8),
                    2 if i < input.len() => {
                        input.remove(i);
                    }
                    _ => input.truncate(i),
                }
            }
            for expect in [Expect::Status, Expect::Values, Expect::Stats, Expect::Meta] {
                let _ = decode_all(expect, &input);
            }
        }
    }
}
