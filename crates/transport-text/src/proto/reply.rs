//! What a reply is once parsed: status lines, values, meta replies, and the parse error.

use std::fmt;

use newcache_transport::{Item, MetaItem, MAX_KEY_LEN};

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

impl Status {
    /// True for memcached's error lines (`ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`),
    /// which may answer any request in place of the reply it expects.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Status::Error | Status::ClientError(_) | Status::ServerError(_)
        )
    }
}

/// A key as a `VALUE` line names it, kept inline: reading it allocates nothing. (Two
/// keys are equal when their bytes are: what lies past the length is not compared.)
#[derive(Clone, Copy)]
pub struct ReplyKey {
    pub(super) len: u8,
    pub(super) bytes: [u8; MAX_KEY_LEN],
}

impl ReplyKey {
    /// The key, or `None` when it is empty or longer than memcached allows.
    pub fn new(key: &[u8]) -> Option<ReplyKey> {
        let mut made = ReplyKey::EMPTY;
        made.set(key).then_some(made)
    }

    /// No key (length 0, which [`ReplyKey::new`] never makes): a tag that echoed none.
    pub(super) const EMPTY: ReplyKey = ReplyKey {
        len: 0,
        bytes: [0; MAX_KEY_LEN],
    };

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// Makes this `key`, written in place (only its own bytes): false, and unchanged, when
    /// it is empty or longer than memcached allows.
    pub(super) fn set(&mut self, key: &[u8]) -> bool {
        let (Ok(len), Some(to)) = (u8::try_from(key.len()), self.bytes.get_mut(..key.len())) else {
            return false;
        };
        if len == 0 {
            return false;
        }
        to.copy_from_slice(key);
        self.len = len;
        true
    }
}

impl PartialEq for ReplyKey {
    fn eq(&self, other: &ReplyKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ReplyKey {}

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
    pub(super) first: Option<(ReplyKey, Item)>,
    /// The keys of `rest`, one after another.
    pub(super) rest_keys: Vec<u8>,
    /// Each later value and where its key ends in `rest_keys` (it starts where the one
    /// before ends).
    pub(super) rest: Vec<(usize, Item)>,
}

/// Bytes reserved per key of a multi-get's reply (newcache's own keys are 43 to 60).
pub(super) const KEY_ROOM: usize = 64;

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
    /// `VALUE` blocks up to `END`, as (key, item). Boxed: the first key is kept inline
    /// in [`Values`], and every reply would otherwise be as large, and be copied as such
    /// each time it moves.
    Values(Box<Values>),
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
