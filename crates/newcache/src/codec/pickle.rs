//! Python pickles (flag 1): reading what Python's clients store, the `pickle` codec, and
//! django-newcache's herd tuple `(newcache.Marker(), value, expiry)`.
//!
//! Reading goes through serde-pickle after a scan of the opcodes, which refuses what has no
//! serde form (a class instance, a `datetime`, a `Decimal`...) with an error naming the class,
//! instead of letting it decode to something else (serde-pickle turns an unknown instance
//! into an empty dict).

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;

use super::CodecError;

const PROTO: u8 = 0x80;
const FRAME: u8 = 0x95;
const MEMOIZE: u8 = 0x94;
const STOP: u8 = b'.';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const LONG1: u8 = 0x8a;
const TUPLE3: u8 = 0x87;
const EMPTY_TUPLE: u8 = b')';
const NEWOBJ: u8 = 0x81;
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE: u8 = b'X';
const SHORT_BINBYTES: u8 = b'C';
const BINBYTES: u8 = b'B';
const STACK_GLOBAL: u8 = 0x93;

/// The class django-newcache wraps herd-protected values with.
const MARKER: &str = "newcache.Marker";
/// Globals serde-pickle turns into their values (through `REDUCE`).
const REDUCIBLE: [&str; 11] = [
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "builtins.list",
    "builtins.int",
    "__builtin__.set",
    "__builtin__.frozenset",
    "__builtin__.bytearray",
    "__builtin__.list",
    "__builtin__.int",
    "_codecs.encode",
];

/// django-newcache's herd tuple, found by [`marker`]: the value's soft expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerTuple {
    /// The soft expiry, in Unix seconds (the tuple's third element).
    pub expiry_secs: i64,
    /// Where the expiry's four little-endian bytes sit when it is a `BININT` (so a claim can
    /// push it forward in place).
    pub expiry_at: Option<usize>,
}

/// What a scan of a pickle found.
#[derive(Debug, Default)]
struct Scan {
    marker: Option<MarkerTuple>,
}

/// How deep containers may nest: serde-pickle builds values recursively, and a pickle a few
/// hundred kilobytes long can nest lists a hundred thousand deep (a stack overflow, not an
/// error). serde_json's limit.
pub const MAX_DEPTH: u32 = 128;

/// How deep the scan lets containers nest: [`MAX_DEPTH`] for the value, and one more for
/// django-newcache's herd tuple around it (a value at the limit, wrapped, is still read).
const SCAN_DEPTH: u32 = MAX_DEPTH + 1;

fn err(msg: impl Into<String>) -> CodecError {
    CodecError(msg.into())
}

fn no_serde_form(global: Option<&str>) -> CodecError {
    err(format!(
        "the pickle holds {}, which has no serde form; read its bytes with get_raw",
        global.map_or("an object of a Python class".to_owned(), |g| format!(
            "a {g}"
        ))
    ))
}

/// The first `N` bytes of `raw` (which the caller took exactly `N` of).
fn array<const N: usize>(raw: &[u8]) -> [u8; N] {
    raw.try_into().unwrap_or([0; N])
}

/// A cursor over the pickle's bytes.
struct Ops<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Ops<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(err("the pickle is truncated"));
        };
        let out = self.bytes.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(out)
    }

    fn len(&mut self, width: usize) -> Result<usize, CodecError> {
        let raw = self.take(width)?;
        let mut le = [0u8; 8];
        le.get_mut(..width)
            .ok_or_else(|| err("bad length"))?
            .copy_from_slice(raw);
        usize::try_from(u64::from_le_bytes(le)).map_err(|_| err("the pickle is too long"))
    }

    fn line(&mut self) -> Result<&'a [u8], CodecError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| err("the pickle is truncated"))?;
        let out = self.take(n)?;
        self.pos += 1;
        Ok(out)
    }

    fn line_number(&mut self) -> Result<usize, CodecError> {
        std::str::from_utf8(self.line()?)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| err("bad memo index"))
    }
}

/// What the scan knows of a value on the pickle machine's stack.
#[derive(Debug, Clone, PartialEq)]
enum What {
    /// Nothing the scan needs.
    Other,
    /// A short string (a class's module or name, for `STACK_GLOBAL`).
    Text(String),
    /// An integer, and where its four bytes sit when it is a `BININT`.
    Int(i64, Option<usize>),
    /// A class or function, by `module.name`.
    Global(String),
    /// A `newcache.Marker()`.
    Marker,
    /// django-newcache's `(Marker, value, expiry)`.
    Seed(MarkerTuple),
}

/// What one value costs once serde-pickle has built it, in bytes (its value type's size,
/// rounded up), before the bytes of a string it holds.
const VALUE_COST: u64 = 48;

/// How many bytes the values serde-pickle builds from a pickle of `len` bytes may take:
/// 64 MiB plus 64 times the pickle's length. A pickle without shared references never
/// comes near it (each opcode byte makes at most one value); one whose `DUP`s and memo
/// references expand to a tree of gigabytes is refused before serde-pickle builds it
/// (60 bytes of `DUP` and `TUPLE3` make 3^17 values).
fn expansion_limit(len: usize) -> u64 {
    (64 << 20) + 64 * len as u64
}

/// A value as serde-pickle builds it: a leaf of some cost, or a container (by index into
/// [`Machine::nodes`], so that every reference to one object, through `DUP` or the memo,
/// is the same container and sees what is appended to it later).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Node {
    Leaf(u64),
    Container(usize),
}

/// A value on the pickle machine's stack: how deep its containers nest, what it is, and
/// the object it is.
#[derive(Debug, Clone)]
struct Slot {
    depth: u32,
    what: What,
    node: Node,
}

impl Slot {
    fn leaf(what: What) -> Slot {
        Slot::bytes(what, 0)
    }

    /// A leaf holding `n` bytes of a string.
    fn bytes(what: What, n: usize) -> Slot {
        Slot {
            depth: 0,
            what,
            node: Node::Leaf(VALUE_COST.saturating_add(n as u64)),
        }
    }
}

/// The pickle machine's stack, as far as the scan follows it.
struct Machine {
    stack: Vec<Slot>,
    marks: Vec<usize>,
    memo: Vec<Option<Slot>>,
    markers: usize,
    /// Every container's elements.
    nodes: Vec<Vec<Node>>,
}

impl Machine {
    fn pop(&mut self) -> Result<Slot, CodecError> {
        self.stack
            .pop()
            .ok_or_else(|| err("not a pickle: stack underflow"))
    }

    fn top(&mut self) -> Result<&mut Slot, CodecError> {
        self.stack
            .last_mut()
            .ok_or_else(|| err("not a pickle: stack underflow"))
    }

    fn push(&mut self, slot: Slot) -> Result<(), CodecError> {
        if slot.depth > SCAN_DEPTH {
            return Err(err(format!(
                "the pickle nests containers deeper than {MAX_DEPTH}"
            )));
        }
        self.stack.push(slot);
        Ok(())
    }

    /// Pops everything down to the last MARK, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Slot>, CodecError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| err("not a pickle: no MARK"))?;
        if mark > self.stack.len() {
            return Err(err("not a pickle: stack underflow"));
        }
        Ok(self.stack.split_off(mark))
    }

    /// A new container holding `items`, one level deeper than the deepest.
    fn container(&mut self, items: &[Slot]) -> Slot {
        self.nodes.push(items.iter().map(|s| s.node).collect());
        Slot {
            depth: items.iter().map(|s| s.depth).max().unwrap_or(0) + 1,
            what: What::Other,
            node: Node::Container(self.nodes.len() - 1),
        }
    }

    /// Adds `items` to the container on top of the stack.
    fn fill(&mut self, items: &[Slot]) -> Result<(), CodecError> {
        let depth = items.iter().map(|s| s.depth).max().unwrap_or(0) + 1;
        let top = self.top()?;
        top.depth = top.depth.max(depth);
        let Node::Container(id) = top.node else {
            return Err(err(
                "not a pickle: items added to something not a container",
            ));
        };
        if let Some(elements) = self.nodes.get_mut(id) {
            elements.extend(items.iter().map(|s| s.node));
        }
        let top = self.top()?;
        if top.depth > SCAN_DEPTH {
            return Err(err(format!(
                "the pickle nests containers deeper than {MAX_DEPTH}"
            )));
        }
        Ok(())
    }

    /// Walks the tree serde-pickle will build from `root`, expanding every shared reference
    /// as it will: refuses a tree that costs more than `limit` bytes, nests deeper than
    /// [`SCAN_DEPTH`] (containers filled after they were nested are counted here), or holds
    /// itself. Returns how deep the tree nests.
    fn check_expansion(&self, root: Node, limit: u64) -> Result<u32, CodecError> {
        #[derive(Clone, Copy)]
        enum State {
            New,
            Open,
            Done { cost: u64, depth: u32 },
        }
        let Node::Container(root) = root else {
            return Ok(0);
        };
        let mut root_depth = 1;
        let mut state = vec![State::New; self.nodes.len()];
        // (container, next element, cost so far, depth so far)
        let mut path: Vec<(usize, usize, u64, u32)> = vec![(root, 0, VALUE_COST, 0)];
        if let Some(s) = state.get_mut(root) {
            *s = State::Open;
        }
        while let Some(&(id, next, cost, depth)) = path.last() {
            let child = self.nodes.get(id).and_then(|e| e.get(next)).copied();
            let Some(child) = child else {
                // Done with this container: add it to its parent.
                path.pop();
                if path.is_empty() {
                    root_depth = depth + 1;
                }
                if let Some(s) = state.get_mut(id) {
                    *s = State::Done {
                        cost,
                        depth: depth + 1,
                    };
                }
                if let Some(parent) = path.last_mut() {
                    parent.2 = parent.2.saturating_add(cost);
                    parent.3 = parent.3.max(depth + 1);
                }
                continue;
            };
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            let (child_cost, child_depth) = match child {
                Node::Leaf(cost) => (cost, 0),
                Node::Container(c) => match state.get(c).copied() {
                    Some(State::Done { cost, depth }) => (cost, depth),
                    Some(State::Open) => {
                        return Err(err("the pickle holds a container that holds itself"))
                    }
                    _ => {
                        if path.len() >= SCAN_DEPTH as usize {
                            return Err(err(format!(
                                "the pickle nests containers deeper than {MAX_DEPTH}"
                            )));
                        }
                        if let Some(s) = state.get_mut(c) {
                            *s = State::Open;
                        }
                        path.push((c, 0, VALUE_COST, 0));
                        continue;
                    }
                },
            };
            if let Some(top) = path.last_mut() {
                top.2 = top.2.saturating_add(child_cost);
                top.3 = top.3.max(child_depth);
            }
            let total = path.iter().map(|p| p.2).fold(0u64, u64::saturating_add);
            if total > limit || child_depth > SCAN_DEPTH {
                return Err(err(if total > limit {
                    format!("the pickle's shared references expand past {limit} bytes")
                } else {
                    format!("the pickle nests containers deeper than {MAX_DEPTH}")
                }));
            }
        }
        Ok(root_depth)
    }

    fn memoize(&mut self, index: usize, limit: usize) -> Result<(), CodecError> {
        if index > limit {
            return Err(err("bad memo index"));
        }
        let top = self.top()?.clone();
        if self.memo.len() <= index {
            self.memo.resize(index + 1, None);
        }
        if let Some(slot) = self.memo.get_mut(index) {
            *slot = Some(top);
        }
        Ok(())
    }
}

/// Walks the opcodes of `bytes` on a model of the pickle machine's stack: refuses what
/// serde-pickle cannot give a serde form (naming the class), containers nested deeper than
/// [`MAX_DEPTH`], and anything that is not a whole pickle; recognises django-newcache's herd
/// tuple.
fn scan(bytes: &[u8]) -> Result<Scan, CodecError> {
    let mut ops = Ops { bytes, pos: 0 };
    let mut m = Machine {
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Vec::new(),
        markers: 0,
        nodes: Vec::new(),
    };
    loop {
        let op = *ops.take(1)?.first().unwrap_or(&STOP);
        match op {
            STOP => break,
            PROTO => {
                ops.take(1)?;
            }
            FRAME => {
                ops.take(8)?;
            }
            MEMOIZE => m.memoize(m.memo.len(), bytes.len())?,
            b'p' => {
                let index = ops.line_number()?;
                m.memoize(index, bytes.len())?;
            }
            b'q' | b'r' => {
                let index = ops.len(if op == b'q' { 1 } else { 4 })?;
                m.memoize(index, bytes.len())?;
            }
            b'g' | b'h' | b'j' => {
                let index = match op {
                    b'g' => ops.line_number()?,
                    b'h' => ops.len(1)?,
                    _ => ops.len(4)?,
                };
                let slot = m
                    .memo
                    .get(index)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| err(format!("not a pickle: memo {index} is empty")))?;
                m.push(slot)?;
            }
            // Strings: SHORT_BINUNICODE, BINUNICODE, BINUNICODE8, UNICODE, STRING.
            SHORT_BINUNICODE | BINUNICODE | 0x8d => {
                let n = ops.len(match op {
                    SHORT_BINUNICODE => 1,
                    BINUNICODE => 4,
                    _ => 8,
                })?;
                let raw = ops.take(n)?;
                // Only short strings can name a class; long ones are not copied.
                let what = if n <= 256 {
                    What::Text(String::from_utf8_lossy(raw).into_owned())
                } else {
                    What::Other
                };
                m.push(Slot::bytes(what, n))?;
            }
            b'V' | b'S' => {
                let line = ops.line()?;
                let text = String::from_utf8_lossy(line).trim_matches('\'').to_owned();
                m.push(Slot::bytes(What::Text(text), line.len()))?;
            }
            // Byte strings: SHORT_BINSTRING, BINSTRING, SHORT_BINBYTES, BINBYTES, BINBYTES8,
            // BYTEARRAY8.
            b'U' | b'T' | SHORT_BINBYTES | BINBYTES | 0x8e | 0x96 => {
                let n = ops.len(match op {
                    b'U' | SHORT_BINBYTES => 1,
                    b'T' | BINBYTES => 4,
                    _ => 8,
                })?;
                ops.take(n)?;
                m.push(Slot::bytes(What::Other, n))?;
            }
            BININT1 => {
                let v = i64::from(*ops.take(1)?.first().unwrap_or(&0));
                m.push(Slot::leaf(What::Int(v, None)))?;
            }
            BININT2 => {
                let v = i64::from(u16::from_le_bytes(array(ops.take(2)?)));
                m.push(Slot::leaf(What::Int(v, None)))?;
            }
            BININT => {
                let at = ops.pos;
                let v = i64::from(i32::from_le_bytes(array(ops.take(4)?)));
                m.push(Slot::leaf(What::Int(v, Some(at))))?;
            }
            LONG1 | 0x8b => {
                let n = ops.len(if op == LONG1 { 1 } else { 4 })?;
                let raw = ops.take(n)?;
                let what = if n <= 8 {
                    let fill = if raw.last().is_some_and(|b| b & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    };
                    let mut le = [fill; 8];
                    if let Some(low) = le.get_mut(..n) {
                        low.copy_from_slice(raw);
                    }
                    What::Int(i64::from_le_bytes(le), None)
                } else {
                    What::Other
                };
                m.push(Slot::bytes(what, n))?;
            }
            b'I' | b'L' => {
                let text = String::from_utf8_lossy(ops.line()?).into_owned();
                let what = text
                    .trim()
                    .trim_end_matches('L')
                    .parse()
                    .map_or(What::Other, |v| What::Int(v, None));
                m.push(Slot::leaf(what))?;
            }
            b'F' => {
                ops.line()?;
                m.push(Slot::leaf(What::Other))?;
            }
            b'G' => {
                ops.take(8)?;
                m.push(Slot::leaf(What::Other))?;
            }
            // NONE, NEWTRUE, NEWFALSE.
            b'N' | 0x88 | 0x89 => m.push(Slot::leaf(What::Other))?,
            // Empty containers.
            b']' | b'}' | EMPTY_TUPLE | 0x8f => {
                let empty = m.container(&[]);
                m.push(empty)?;
            }
            b'(' => m.marks.push(m.stack.len()),
            b'0' => {
                m.pop()?;
            }
            b'1' => {
                m.pop_mark()?;
            }
            b'2' => {
                let top = m.top()?.clone();
                m.push(top)?;
            }
            // APPEND.
            b'a' => {
                let item = m.pop()?;
                m.fill(&[item])?;
            }
            // SETITEM.
            b's' => {
                let value = m.pop()?;
                let key = m.pop()?;
                m.fill(&[key, value])?;
            }
            // APPENDS, SETITEMS, ADDITEMS.
            b'e' | b'u' | 0x90 => {
                let items = m.pop_mark()?;
                m.fill(&items)?;
            }
            // LIST, DICT, TUPLE, FROZENSET: a new container of what follows the mark.
            b'l' | b'd' | b't' | 0x91 => {
                let items = m.pop_mark()?;
                let container = m.container(&items);
                m.push(container)?;
            }
            // TUPLE1, TUPLE2, TUPLE3.
            0x85 | 0x86 | TUPLE3 => {
                let n = usize::from(op - 0x84);
                let at = m
                    .stack
                    .len()
                    .checked_sub(n)
                    .ok_or_else(|| err("not a pickle: stack underflow"))?;
                let items = m.stack.split_off(at);
                let mut tuple = m.container(&items);
                if let [Slot {
                    what: What::Marker, ..
                }, _, Slot {
                    what: What::Int(expiry_secs, expiry_at),
                    ..
                }] = items.as_slice()
                {
                    tuple.what = What::Seed(MarkerTuple {
                        expiry_secs: *expiry_secs,
                        expiry_at: *expiry_at,
                    });
                }
                m.push(tuple)?;
            }
            // GLOBAL: module and name on two lines.
            b'c' => {
                let module = String::from_utf8_lossy(ops.line()?).into_owned();
                let name = String::from_utf8_lossy(ops.line()?).into_owned();
                m.push(Slot::leaf(What::Global(format!("{module}.{name}"))))?;
            }
            STACK_GLOBAL => {
                let name = m.pop()?;
                let module = m.pop()?;
                let global = match (module.what, name.what) {
                    (What::Text(module), What::Text(name)) => format!("{module}.{name}"),
                    _ => return Err(err("not a pickle: STACK_GLOBAL without names")),
                };
                m.push(Slot::leaf(What::Global(global)))?;
            }
            NEWOBJ => {
                let args = m.pop()?;
                let class = m.pop()?;
                match class.what {
                    What::Global(g) if g == MARKER && args.depth == 1 => {
                        m.markers += 1;
                        m.push(Slot::leaf(What::Marker))?;
                    }
                    What::Global(g) => return Err(no_serde_form(Some(&g))),
                    _ => return Err(no_serde_form(None)),
                }
            }
            // REDUCE: only the few builtins serde-pickle turns into values.
            b'R' => {
                let args = m.pop()?;
                let callable = m.pop()?;
                match callable.what {
                    What::Global(g) if REDUCIBLE.contains(&g.as_str()) => {
                        let value = m.container(&[args]);
                        m.push(value)?
                    }
                    What::Global(g) => return Err(no_serde_form(Some(&g))),
                    _ => return Err(no_serde_form(None)),
                }
            }
            // INST, OBJ, BUILD, NEWOBJ_EX: objects of classes.
            b'i' => {
                let module = String::from_utf8_lossy(ops.line()?).into_owned();
                let name = String::from_utf8_lossy(ops.line()?).into_owned();
                return Err(no_serde_form(Some(&format!("{module}.{name}"))));
            }
            b'o' | b'b' | 0x92 => {
                let named = m.stack.iter().rev().find_map(|s| match &s.what {
                    What::Global(g) => Some(g.clone()),
                    _ => None,
                });
                return Err(no_serde_form(named.as_deref()));
            }
            // PERSID, BINPERSID, EXT1/2/4, NEXT_BUFFER, READONLY_BUFFER.
            b'P' | b'Q' | 0x82 | 0x83 | 0x84 | 0x97 | 0x98 => {
                return Err(err(format!(
                    "the pickle uses opcode {op:#04x} (persistent ids, extensions or out-of-band buffers), which has no serde form"
                )));
            }
            other => {
                return Err(err(format!("not a pickle: unknown opcode {other:#04x}")));
            }
        }
    }
    if ops.pos != bytes.len() {
        return Err(err("trailing bytes after the pickle's STOP"));
    }
    let [result] = m.stack.as_slice() else {
        return Err(err("not a pickle: it leaves no single value"));
    };
    let depth = m.check_expansion(result.node, expansion_limit(bytes.len()))?;
    let seed = matches!(result.what, What::Seed(_));
    if depth > MAX_DEPTH + u32::from(seed) {
        return Err(err(format!(
            "the pickle nests containers deeper than {MAX_DEPTH}"
        )));
    }
    match (&result.what, m.markers) {
        (What::Seed(marker), 1) => Ok(Scan {
            marker: Some(*marker),
        }),
        (_, 0) => Ok(Scan { marker: None }),
        _ => Err(err(
            "a newcache.Marker that is not django-newcache's herd tuple",
        )),
    }
}

fn options() -> serde_pickle::DeOptions {
    // Keeps the Marker's (empty) constructor arguments instead of a placeholder; the scan
    // refused every other object.
    serde_pickle::DeOptions::new().keep_restore_state()
}

fn pickle_error(e: serde_pickle::Error) -> CodecError {
    err(format!("pickle: {e}"))
}

/// Decodes a pickle as a `T`; a django-newcache herd tuple decodes as its value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if let Some(b) = super::plain::pickled_bool(bytes) {
        // newcache's own booleans: no need for the general path.
        return T::deserialize(serde::de::value::BoolDeserializer::<CodecError>::new(b));
    }
    match scan(bytes)?.marker {
        None => serde_pickle::from_slice(bytes, options()).map_err(pickle_error),
        Some(_) => serde_pickle::from_slice::<(IgnoredAny, T, IgnoredAny)>(bytes, options())
            .map(|(_, value, _)| value)
            .map_err(pickle_error),
    }
}

/// django-newcache's herd tuple, when `bytes` is one (a cheap check first: such pickles name
/// the `newcache` module in their first bytes).
pub fn marker(bytes: &[u8]) -> Result<Option<MarkerTuple>, CodecError> {
    let head = bytes.get(..40).unwrap_or(bytes);
    if !head.windows(8).any(|w| w == b"newcache") {
        return Ok(None);
    }
    Ok(scan(bytes)?.marker)
}

/// The same herd tuple with its expiry moved to `expiry_secs`: rewritten in place when the
/// expiry is a 4-byte `BININT` (django-newcache's, until 2038), else `None`.
pub fn with_expiry(bytes: &[u8], marker: &MarkerTuple, expiry_secs: u64) -> Option<Vec<u8>> {
    let at = marker.expiry_at?;
    let secs = i32::try_from(expiry_secs).ok()?;
    let mut out = bytes.to_vec();
    out.get_mut(at..at + 4)?
        .copy_from_slice(&secs.to_le_bytes());
    Some(out)
}

/// Appends the pickle (protocol 3, serde-pickle's) of `value`.
///
/// A value that nests deeper than [`MAX_DEPTH`] is refused here, as reading refuses it: every
/// pickle this writes, it reads back.
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    // What serde-pickle's to_writer does, which needs a sized value.
    out.extend_from_slice(&[PROTO, 3]);
    let mut serializer = serde_pickle::Serializer::new(&mut *out, serde_pickle::SerOptions::new());
    value.serialize(&mut serializer).map_err(pickle_error)?;
    out.push(STOP);
    if let Err(e) = scan(out.get(start..).unwrap_or_default()) {
        out.truncate(start);
        return Err(err(format!(
            "the value cannot be stored as a pickle newcache reads back: {}",
            e.0
        )));
    }
    Ok(())
}

/// Appends the pickle opcodes that push an integer given in decimal, as Python writes them.
fn push_int(decimal: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let text = std::str::from_utf8(decimal).map_err(|_| err("not a decimal integer"))?;
    let text = text.trim();
    let n: i128 = match text.parse() {
        Ok(n) => n,
        // Past i128: a u128 (the widest integer serde has), as LONG1 with a zero sign byte.
        Err(_) => {
            let n: u128 = text.parse().map_err(|_| err("not a decimal integer"))?;
            out.extend_from_slice(&[LONG1, 17]);
            out.extend_from_slice(&n.to_le_bytes());
            out.push(0);
            return Ok(());
        }
    };
    match n {
        0..=0xff => out.extend_from_slice(&[BININT1, n as u8]),
        0x100..=0xffff => {
            out.push(BININT2);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        _ if i32::try_from(n).is_ok() => {
            out.push(BININT);
            out.extend_from_slice(&(n as i32).to_le_bytes());
        }
        _ => {
            // LONG1: little-endian two's complement, as few bytes as keep the sign.
            let bytes = n.to_le_bytes();
            let mut len = bytes.len();
            while let Some(&[prev, last]) = bytes.get(len.saturating_sub(2)..len) {
                if len > 1
                    && ((last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0))
                {
                    len -= 1;
                } else {
                    break;
                }
            }
            out.extend_from_slice(&[LONG1, len as u8]);
            out.extend_from_slice(bytes.get(..len).unwrap_or_default());
        }
    }
    Ok(())
}

/// Appends the opcodes that push a value encoded by the codec as `(bytes, flags)`: Python's
/// own for str, int and bytes, and a pickle's body (between its protocol header and STOP)
/// for anything pickled.
fn push_value(bytes: &[u8], flags: u32, out: &mut Vec<u8>) -> Result<(), CodecError> {
    match flags {
        super::FLAG_TEXT | super::FLAG_BYTES => {
            let (short, long) = if flags == super::FLAG_TEXT {
                (SHORT_BINUNICODE, BINUNICODE)
            } else {
                (SHORT_BINBYTES, BINBYTES)
            };
            match u8::try_from(bytes.len()) {
                Ok(n) => out.extend_from_slice(&[short, n]),
                Err(_) => {
                    let n = u32::try_from(bytes.len())
                        .map_err(|_| err("value too large for a pickle"))?;
                    out.push(long);
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
            out.extend_from_slice(bytes);
            out.push(MEMOIZE);
            Ok(())
        }
        super::FLAG_INT => push_int(bytes, out),
        super::FLAG_PICKLE => {
            let body = match bytes {
                [PROTO, _, rest @ ..] => rest,
                _ => bytes,
            };
            let body = match body {
                [FRAME, _, _, _, _, _, _, _, _, rest @ ..] => rest,
                _ => body,
            };
            match body {
                [ops @ .., STOP] => {
                    out.extend_from_slice(ops);
                    Ok(())
                }
                _ => Err(err("not a pickle")),
            }
        }
        other => Err(err(format!(
            "flags {other:#x}: django-newcache's herd tuple needs the value pickled; use codec=pickle"
        ))),
    }
}

/// django-newcache's herd tuple, `pickle.dumps((newcache.Marker(), value, expiry))` with
/// protocol 5 as its Python 3 code writes it, around a value the codec encoded as
/// `(bytes, flags)`.
pub fn wrap_marker(bytes: &[u8], flags: u32, expiry_secs: u64) -> Result<Vec<u8>, CodecError> {
    let mut body = Vec::with_capacity(bytes.len() + 48);
    body.extend_from_slice(b"\x8c\x08newcache\x94\x8c\x06Marker\x94\x93\x94)\x81\x94");
    push_value(bytes, flags, &mut body)?;
    push_int(expiry_secs.to_string().as_bytes(), &mut body)?;
    body.extend_from_slice(&[TUPLE3, MEMOIZE, STOP]);
    let mut out = Vec::with_capacity(body.len() + 11);
    out.extend_from_slice(&[PROTO, 5]);
    // One frame around the lot, as Python frames small pickles (frames are optional, and
    // Python writes large ones in several; one unframed body is as valid).
    if body.len() < 64 * 1024 {
        out.push(FRAME);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Stored by django-newcache's own code on Python 3 (pylibmc, protocol 5, herd timeout 60).
    const SEED_HELLO: &str = "8005952a000000000000008c086e65776361636865948c064d61726b65729493942981948c0668c3a96c6c6f944ae5cf0e6b87942e";
    const SEED_42: &str = "80059523000000000000008c086e65776361636865948c064d61726b65729493942981944b2a4ae5cf0e6b87942e";
    const SEED_DICT: &str = "80059510000000000000007d948c0161945d94284b014b0265732e";

    #[test]
    fn django_newcaches_herd_tuples_are_recognised_and_decoded() {
        let hello = hex(SEED_HELLO);
        let m = marker(&hello).unwrap().unwrap();
        assert_eq!(m.expiry_secs, 1_796_132_837);
        assert_eq!(decode::<String>(&hello).unwrap(), "héllo");
        let n = hex(SEED_42);
        assert_eq!(marker(&n).unwrap().unwrap().expiry_secs, 1_796_132_837);
        assert_eq!(decode::<i64>(&n).unwrap(), 42);
        let dict = hex(SEED_DICT);
        assert_eq!(marker(&dict).unwrap(), None);
        let d: HashMap<String, Vec<i64>> = decode(&dict).unwrap();
        assert_eq!(d["a"], [1, 2]);
    }

    #[test]
    fn wrapping_writes_the_seeds_exact_bytes() {
        assert_eq!(
            wrap_marker("héllo".as_bytes(), super::super::FLAG_TEXT, 1_796_132_837).unwrap(),
            hex(SEED_HELLO)
        );
        assert_eq!(
            wrap_marker(b"42", super::super::FLAG_INT, 1_796_132_837).unwrap(),
            hex(SEED_42)
        );
    }

    #[test]
    fn a_claim_moves_the_expiry_in_place() {
        let hello = hex(SEED_HELLO);
        let m = marker(&hello).unwrap().unwrap();
        let moved = with_expiry(&hello, &m, 1_800_000_000).unwrap();
        assert_eq!(marker(&moved).unwrap().unwrap().expiry_secs, 1_800_000_000);
        assert_eq!(decode::<String>(&moved).unwrap(), "héllo");
    }

    #[test]
    fn integers_are_pushed_as_python_does() {
        for (n, expect) in [
            ("0", &b"K\x00"[..]),
            ("255", b"K\xff"),
            ("256", b"M\x00\x01"),
            ("-1", b"J\xff\xff\xff\xff"),
            ("2147483648", b"\x8a\x05\x00\x00\x00\x80\x00"),
            ("-2147483649", b"\x8a\x05\xff\xff\xff\x7f\xff"),
            (
                "340282366920938463463374607431768211455",
                b"\x8a\x11\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00",
            ),
        ] {
            let mut out = Vec::new();
            push_int(n.as_bytes(), &mut out).unwrap();
            assert_eq!(out, expect, "{n}");
        }
    }

    #[test]
    fn objects_without_a_serde_form_are_named() {
        // pickle.dumps(datetime.datetime(2020, 1, 2), 5)
        let dt = hex("8005952a000000000000008c086461746574696d65948c086461746574696d65949394430a07e4010200000000000094859452942e");
        let e = decode::<String>(&dt).unwrap_err();
        assert!(e.0.contains("datetime.datetime"), "{e}");
        // class Foo: pass; pickle.dumps(Foo(), 5) in __main__
        let obj = hex("80059517000000000000008c085f5f6d61696e5f5f948c03466f6f9493942981942e");
        let e = decode::<HashMap<String, i32>>(&obj).unwrap_err();
        assert!(e.0.contains("__main__.Foo"), "{e}");
        assert!(decode::<i32>(b"\x80\x05K").is_err());
        assert!(decode::<i32>(b"\xff").is_err());
        assert!(decode::<i32>(b"K\x05.junk").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // ]]]...]aaa...a. : lists 100,000 deep in 200 KB.
        let n = 100_000;
        let mut p = vec![PROTO, 2];
        p.extend(std::iter::repeat_n(b']', n));
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(STOP);
        let e = decode::<serde_pickle::Value>(&p).unwrap_err();
        assert!(e.0.contains("deeper than 128"), "{e}");
        // The same through marks and tuples.
        let mut p = vec![PROTO, 2];
        p.extend(std::iter::repeat_n(b'(', n));
        p.extend(std::iter::repeat_n(b't', n));
        p.push(STOP);
        assert!(decode::<serde_pickle::Value>(&p).is_err());
        // 128 deep is fine.
        let mut p = vec![PROTO, 2];
        p.extend(std::iter::repeat_n(b']', 128));
        p.extend(std::iter::repeat_n(b'a', 127));
        p.push(STOP);
        assert!(decode::<serde_pickle::Value>(&p).is_ok());
    }

    #[test]
    fn a_value_at_the_depth_limit_is_read_inside_django_newcaches_tuple_too() {
        // 128 lists deep: read alone, and wrapped in the herd tuple (one level more).
        let mut p = vec![PROTO, 2];
        p.extend(std::iter::repeat_n(b']', 128));
        p.extend(std::iter::repeat_n(b'a', 127));
        p.push(STOP);
        assert!(decode::<serde_pickle::Value>(&p).is_ok());
        let wrapped = wrap_marker(&p, super::super::FLAG_PICKLE, 1_800_000_000).unwrap();
        assert!(marker(&wrapped).unwrap().is_some());
        assert!(decode::<serde_pickle::Value>(&wrapped).is_ok());
        // 129 alone is refused.
        let mut p = vec![PROTO, 2];
        p.extend(std::iter::repeat_n(b']', 129));
        p.extend(std::iter::repeat_n(b'a', 128));
        p.push(STOP);
        let e = decode::<serde_pickle::Value>(&p).unwrap_err();
        assert!(e.0.contains("deeper than 128"), "{e}");
    }

    #[test]
    fn a_value_too_deep_to_read_back_is_refused_when_written() {
        // 128 nested lists: written and read; 129: refused at once, nothing written.
        #[derive(serde::Serialize)]
        struct Nest(Vec<Nest>);
        fn nested(depth: usize) -> Nest {
            (0..depth).fold(Nest(Vec::new()), |inner, _| Nest(vec![inner]))
        }
        let mut out = Vec::new();
        encode(&nested(127), &mut out).unwrap();
        assert!(decode::<serde_pickle::Value>(&out).is_ok());
        let mut out = b"kept".to_vec();
        let e = encode(&nested(128), &mut out).unwrap_err();
        assert!(e.0.contains("deeper than 128"), "{e}");
        assert_eq!(out, b"kept");
    }

    #[test]
    fn shared_references_that_expand_past_the_limit_are_refused() {
        // (None, None, None) then 17 times DUP DUP TUPLE3: 60 bytes, 3^17 leaves once
        // serde-pickle expands the references (aborted the process on allocation).
        let mut p = vec![PROTO, 2, b'N'];
        for _ in 0..17 {
            p.extend_from_slice(&[b'2', b'2', TUPLE3]);
        }
        p.push(STOP);
        let e = decode::<serde_pickle::Value>(&p).unwrap_err();
        assert!(e.0.contains("expand past"), "{e}");
        // A list referenced 1,000 times and filled afterwards: small when referenced, big
        // when built.
        let mut p = vec![PROTO, 2, b']', MEMOIZE, b'0', b'(']; // memo 0: an empty list
        p.extend(std::iter::repeat_n([b'h', 0], 2000).flatten());
        p.push(b'l'); // a list of 2,000 references to it
        p.extend_from_slice(&[b'h', 0, b'(', b'B', 0xe8, 0x03, 0, 0]); // then fill it
        p.extend(std::iter::repeat_n(0u8, 1000));
        p.extend(std::iter::repeat_n(b'N', 1000));
        p.extend_from_slice(&[b'e', b'0', STOP]);
        // 2,000 copies of a list of 1,001 values (one holding 1,000 bytes): 2000 * 1001 * 48.
        let e = decode::<serde_pickle::Value>(&p).unwrap_err();
        assert!(e.0.contains("expand past"), "{e}");
        // Sharing within the limit decodes: a string referenced 100 times.
        let mut p = vec![PROTO, 2, SHORT_BINUNICODE, 1, b'a', MEMOIZE, b'0', b'('];
        p.extend(std::iter::repeat_n([b'h', 0], 100).flatten());
        p.extend_from_slice(&[b'l', STOP]);
        let v: Vec<String> = decode(&p).unwrap();
        assert_eq!(v, vec!["a"; 100]);
        // A list that holds itself is an error, not a hang.
        let p = [PROTO, 2, b']', MEMOIZE, b'h', 0, b'a', STOP];
        let e = decode::<serde_pickle::Value>(&p).unwrap_err();
        assert!(e.0.contains("holds itself"), "{e}");
    }

    #[test]
    fn mangled_pickles_are_errors_never_panics() {
        let seeds = [hex(SEED_HELLO), hex(SEED_42), hex(SEED_DICT)];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let mut p = seeds[round % 3].clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % p.len();
                match next() % 3 {
                    0 => p[i] = next() as u8,
                    1 => {
                        p.truncate(i);
                    }
                    _ => p.insert(i, next() as u8),
                }
                if p.is_empty() {
                    break;
                }
            }
            let _ = decode::<serde_pickle::Value>(&p);
            let _ = decode::<String>(&p);
            let _ = marker(&p);
        }
    }

    #[test]
    fn python_pickles_decode_as_serde_values() {
        // pickle.dumps(x, 5) for 2.5, None, True, [1, 'a'], b'\x00', {1, 2}
        assert_eq!(
            decode::<f64>(&hex("8005950a000000000000004740040000000000002e")).unwrap(),
            2.5
        );
        assert_eq!(decode::<Option<i32>>(b"\x80\x05N.").unwrap(), None);
        assert!(decode::<bool>(b"\x80\x05\x88.").unwrap());
        assert!(decode::<bool>(super::super::plain::PICKLED_TRUE).unwrap());
        assert!(!decode::<bool>(super::super::plain::PICKLED_FALSE).unwrap());
        // python-memcached's protocol 0: {'a': 1}
        let d: HashMap<String, i64> = decode(b"(dp0\nVa\np1\nI1\ns.").unwrap();
        assert_eq!(d["a"], 1);
    }
}
