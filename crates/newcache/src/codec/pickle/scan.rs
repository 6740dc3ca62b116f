//! The scan of a pickle's opcodes that runs before serde-pickle reads it: refuses what has no
//! serde form, nests too deep or is not a whole pickle, and finds django-newcache's herd tuple.

use super::herd::{ExpiryAt, MarkerTuple, MARKER};
use super::machine::{too_deep, Machine, Node, Slot, What, MAX_READ_COST};
use super::{
    err, BINBYTES, BININT, BININT1, BININT2, BINUNICODE, EMPTY_TUPLE, FRAME, LONG1, MAX_DEPTH,
    MEMOIZE, NEWOBJ, PROTO, READ_RAW, SHORT_BINBYTES, SHORT_BINUNICODE, STACK_GLOBAL, STOP, TUPLE3,
};
use crate::codec::CodecError;

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

/// The most characters of a protocol-0 integer (`I`, `L`) the scan lets through:
/// Python's own limit on the digits of an integer read from text
/// (`sys.int_info.default_max_str_digits`, 4300), and a sign and an `L` beside them.
const MAX_INT_DIGITS: usize = 4302;

/// What a scan of a pickle found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) marker: Option<MarkerTuple>,
    /// Every global the pickle names, in order ([`Scan::why`]).
    pub(super) globals: Vec<String>,
    /// Each memo store (`PUT`, `BINPUT`, `LONG_BINPUT`, `MEMOIZE`): where it ends in the
    /// pickle, its index, and what it stored ([`Scan::unshared`]).
    memo_ops: Vec<(usize, usize, Node)>,
    /// Where each `REDUCE` of `bytes()` or `bytearray()` is ([`Scan::with_empty_bytes`]).
    empty_bytes: Vec<usize>,
    /// The machine once the pickle stopped, and the value it left.
    machine: Machine,
    root: Option<Node>,
}

impl Scan {
    /// serde-pickle's error `e` for this pickle, naming the global it could not resolve
    /// (a function, a class itself, `Ellipsis`) when the scan saw one: "unresolved global
    /// reference" named nothing (an outside audit).
    pub(super) fn why(&self, e: serde_pickle::Error) -> CodecError {
        // The first that is not how a value is built, else the first builtin (`int` itself,
        // not a call of it).
        let named = self.globals.iter().find(|g| !is_machinery(g)).or_else(|| {
            self.globals
                .iter()
                .find(|g| REDUCIBLE.contains(&g.as_str()))
        });
        match named {
            Some(g) if e.to_string().contains("unresolved global") => err(format!(
                "the pickle holds {g} itself (a class, a function or a constant such as Ellipsis), which has no serde form; {READ_RAW}"
            )),
            _ => super::pickle_error(e),
        }
    }
}

impl Scan {
    /// The pickle with each `bytes()` call (`b''` in protocols 0 to 2: python-memcached's,
    /// Django's `MemcachedCache`) and each `bytearray()` call (protocols 0 to 4) made an
    /// empty `bytes` (its `REDUCE` replaced by `POP`,
    /// `POP`, `SHORT_BINBYTES` of 0 bytes), when it has any. serde-pickle read the call as
    /// its empty argument tuple: a `Vec<u8>` took that as empty, but a self-describing
    /// type got an empty list and the CLI showed `()` (an outside audit).
    pub(super) fn with_empty_bytes(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        if self.empty_bytes.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(bytes.len() + 3 * self.empty_bytes.len());
        let mut from = 0;
        for &at in &self.empty_bytes {
            out.extend_from_slice(bytes.get(from..at)?);
            out.extend_from_slice(&[b'0', b'0', SHORT_BINBYTES, 0]);
            from = at + 1;
        }
        out.extend_from_slice(bytes.get(from..)?);
        Some(out)
    }

    /// The pickle with what serde-pickle needs to read its shared objects right, when it
    /// shares any: serde-pickle 1.2 counts the references to each object in its memo and
    /// drops the object at its last one, but an object held by a shared container is
    /// counted once and read once per copy of that container, so the second copy finds it
    /// gone ("recursive structure found"; birkenfeld/serde-pickle#24, open). Python's
    /// `{'author': u, 'editor': u}` failed so (an outside audit). After each memo store
    /// this adds, per time the object appears in the tree serde-pickle builds, a reference
    /// to it that is dropped at once (`LONG_BINGET` then `POP`), so its count outlasts its
    /// reads. `None` when nothing appears twice, or when the references added would come
    /// to more than 64 MiB and 64 bytes per byte of the pickle (bounded by the read limit
    /// alone, [`MAX_READ_COST`], a 241-byte compressed pickle took 3.2 s and 488 MB to
    /// rewrite and read: an outside audit).
    pub(super) fn unshared(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let root = self.root?;
        let (containers, shared) = self.machine.occurrences(root);
        let times = |node: Node| match node {
            Node::Container(c) => containers.get(c).copied().unwrap_or(0),
            Node::Shared(l) => shared.get(l).copied().unwrap_or(0),
            Node::Leaf(_) => 0,
        };
        /// `LONG_BINGET` of a 4-byte index, then `POP`.
        const ADDED: u64 = 6;
        let added: u64 = self
            .memo_ops
            .iter()
            .map(|&(_, _, node)| times(node))
            .filter(|&n| n >= 2)
            .fold(0u64, u64::saturating_add);
        let most = (64u64 << 20).saturating_add((bytes.len() as u64).saturating_mul(64));
        if added == 0 || added.saturating_mul(ADDED) > most.min(MAX_READ_COST) {
            return None;
        }
        let mut out = Vec::with_capacity(bytes.len() + usize::try_from(added * ADDED).ok()?);
        let mut from = 0;
        for &(end, index, node) in &self.memo_ops {
            out.extend_from_slice(bytes.get(from..end)?);
            from = end;
            let n = times(node);
            if n >= 2 {
                let index = u32::try_from(index).ok()?.to_le_bytes();
                for _ in 0..n {
                    out.push(b'j');
                    out.extend_from_slice(&index);
                    out.push(b'0');
                }
            }
        }
        out.extend_from_slice(bytes.get(from..)?);
        Some(out)
    }
}

/// Globals that are part of how a value is built, not values themselves.
fn is_machinery(global: &str) -> bool {
    REDUCIBLE.contains(&global)
        || global == MARKER
        || global.ends_with("._reconstructor")
        || global == "__builtin__.object"
        || global == "builtins.object"
        || global == "__builtin__.bytes"
        || global == "builtins.bytes"
}

fn no_serde_form(global: Option<&str>) -> CodecError {
    err(format!(
        "the pickle holds {}, which has no serde form; {READ_RAW}",
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

/// What a tuple of `items` is to the scan: django-newcache's `(Marker, value, expiry)`, the
/// arguments that make a `Marker` in protocols 0 and 1, or nothing it needs.
fn tuple_of(items: &[Slot]) -> What {
    match items {
        [Slot {
            what: What::Marker, ..
        }, _, Slot {
            what: What::Int(expiry_secs, expiry_at),
            ..
        }] => What::Seed(MarkerTuple {
            expiry_secs: *expiry_secs,
            expiry_at: *expiry_at,
        }),
        [Slot {
            what: What::Global(class),
            ..
        }, Slot {
            what: What::Global(base),
            ..
        }, _]
            if class == MARKER && (base == "__builtin__.object" || base == "builtins.object") =>
        {
            What::MarkerArgs
        }
        _ => What::Other,
    }
}

/// Walks the opcodes of `bytes` on a model of the pickle machine's stack: refuses what
/// serde-pickle cannot give a serde form (naming the class), containers nested deeper than
/// [`MAX_DEPTH`], and anything that is not a whole pickle; recognises django-newcache's herd
/// tuple.
pub(super) fn scan(bytes: &[u8]) -> Result<Scan, CodecError> {
    let mut ops = Ops { bytes, pos: 0 };
    let mut m = Machine::default();
    let mut memo_ops = Vec::new();
    let mut empty_bytes = Vec::new();
    // Every global named so far, in order: protocols 0 and 1 pickle an object as a call of
    // `copyreg._reconstructor` whose first argument, the next global, is its class.
    let mut globals: Vec<String> = Vec::new();
    loop {
        let at = ops.pos;
        let op = *ops.take(1)?.first().unwrap_or(&STOP);
        match op {
            STOP => break,
            PROTO => {
                ops.take(1)?;
            }
            FRAME => {
                ops.take(8)?;
            }
            MEMOIZE | b'p' | b'q' | b'r' => {
                let index = match op {
                    MEMOIZE => m.memo.len(),
                    b'p' => ops.line_number()?,
                    b'q' => ops.len(1)?,
                    _ => ops.len(4)?,
                };
                m.memoize(index, bytes.len())?;
                memo_ops.push((ops.pos, index, m.top()?.node));
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
                m.push(Slot::leaf(What::Int(v, Some(ExpiryAt::BinInt(at)))))?;
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
                let start = ops.pos;
                let line = ops.line()?;
                // Python (3.11 on) refuses to read an integer of more digits from text: its
                // parse takes time growing with their square (a million digits, a 1 MB
                // item, took 1.8 s here before the error: an outside audit).
                if line.len() > MAX_INT_DIGITS {
                    return Err(err(format!(
                        "the pickle holds an integer written with {} characters, past the {MAX_INT_DIGITS} digits Python itself reads; {READ_RAW}",
                        line.len()
                    )));
                }
                // Bare digits (protocol 0's `I1796132837`) can be rewritten in place.
                let at = (op == b'I' && !line.is_empty() && line.iter().all(u8::is_ascii_digit))
                    .then(|| ExpiryAt::Decimal(start, start + line.len()));
                let what = String::from_utf8_lossy(line)
                    .trim()
                    .trim_end_matches('L')
                    .parse()
                    .map_or(What::Other, |v| What::Int(v, at));
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
                let mut container = m.container(&items);
                if op == b't' {
                    container.what = tuple_of(&items);
                }
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
                tuple.what = tuple_of(&items);
                m.push(tuple)?;
            }
            // GLOBAL: module and name on two lines.
            b'c' => {
                let module = String::from_utf8_lossy(ops.line()?).into_owned();
                let name = String::from_utf8_lossy(ops.line()?).into_owned();
                globals.push(format!("{module}.{name}"));
                m.push(Slot::leaf(What::Global(format!("{module}.{name}"))))?;
            }
            STACK_GLOBAL => {
                let name = m.pop()?;
                let module = m.pop()?;
                let global = match (module.what, name.what) {
                    (What::Text(module), What::Text(name)) => format!("{module}.{name}"),
                    _ => return Err(err("not a pickle: STACK_GLOBAL without names")),
                };
                globals.push(global.clone());
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
                    // `b''` in protocols 0 to 2 (python-memcached's, Django's
                    // `MemcachedCache`): `bytes()`, read as the empty bytes it makes
                    // ([`Scan::with_empty_bytes`]). (Other bytes are `_codecs.encode`.) It
                    // was refused, and the dict holding it lost. An empty `bytearray` in
                    // protocols 0 to 4 is `bytearray()`, which serde-pickle refused (it
                    // takes one argument): read so too.
                    What::Global(g)
                        if matches!(
                            g.as_str(),
                            "__builtin__.bytes"
                                | "builtins.bytes"
                                | "__builtin__.bytearray"
                                | "builtins.bytearray"
                        ) && m.is_empty_container(&args) =>
                    {
                        empty_bytes.push(at);
                        m.push(Slot::leaf(What::Other))?
                    }
                    What::Global(g) if REDUCIBLE.contains(&g.as_str()) => {
                        let value = m.container(&[args]);
                        m.push(value)?
                    }
                    // Protocols 0 and 1 make a `newcache.Marker()` this way.
                    What::Global(g)
                        if g.ends_with("._reconstructor")
                            && matches!(args.what, What::MarkerArgs) =>
                    {
                        m.markers += 1;
                        m.push(Slot::leaf(What::Marker))?;
                    }
                    What::Global(g) if g.ends_with("._reconstructor") => {
                        let class = globals.iter().skip_while(|seen| **seen != g).nth(1);
                        return Err(no_serde_form(Some(
                            class.map_or(g.as_str(), String::as_str),
                        )));
                    }
                    // An enum member (an `IntEnum`, Django's `TextChoices`) pickles as
                    // `getattr(Class, 'NAME')`: named by its class, not by `getattr`.
                    What::Global(g) if g == "builtins.getattr" || g == "__builtin__.getattr" => {
                        let class = globals.iter().skip_while(|seen| **seen != g).nth(1);
                        return Err(no_serde_form(Some(&class.map_or(g.clone(), |c| {
                            format!("{c} member (an enum's, as getattr({c}, name))")
                        }))));
                    }
                    What::Global(g) => return Err(no_serde_form(Some(&g))),
                    _ => return Err(no_serde_form(None)),
                }
            }
            // BUILD of a `Marker` with no state: Python 2 pickles (protocol 2, as pylibmc's
            // `cPickle.dumps(v, -1)` on django-newcache's own Python) set the instance's
            // empty `__dict__` after `NEWOBJ`, Python 3 leaves it out. It was refused, and
            // the seed's herd tuple with it (an outside audit). serde-pickle puts the state
            // in the object's place; the tuple's first element is not read.
            b'b' if matches!(m.stack.as_slice(), [.., below, state]
                if matches!(below.what, What::Marker) && m.is_empty_container(state)) =>
            {
                m.pop()?;
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
                    What::Marker => Some(format!("{MARKER} given a state")),
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
    let depth = m.check_expansion(result.node, MAX_READ_COST)?;
    let seed = matches!(result.what, What::Seed(_));
    if depth > MAX_DEPTH + u32::from(seed) {
        return Err(too_deep());
    }
    let marker = match (&result.what, m.markers) {
        (What::Seed(marker), 1) => Some(*marker),
        (_, 0) => None,
        _ => {
            return Err(err(
                "a newcache.Marker that is not django-newcache's herd tuple",
            ))
        }
    };
    let root = Some(result.node);
    Ok(Scan {
        marker,
        globals,
        empty_bytes,
        memo_ops,
        machine: m,
        root,
    })
}

#[cfg(test)]
mod tests {
    use crate::codec::pickle::tests::hex;
    use crate::codec::pickle::{decode, PROTO, STOP};
    use std::collections::HashMap;

    #[test]
    fn a_protocol_0_object_is_named_by_its_class_not_by_copyreg() {
        // pickle.dumps(Thing(), 0), as python-memcached stores it (Thing a class of __main__)
        let p = b"ccopy_reg\n_reconstructor\np0\n(c__main__\nThing\np1\nc__builtin__\nobject\np2\nNtp3\nRp4\n.";
        let e = decode::<serde_pickle::Value>(p).unwrap_err();
        assert!(e.0.contains("a __main__.Thing,"), "{e}");
    }

    #[test]
    fn an_enum_member_is_named_by_its_class() {
        // pickle.dumps(Color.RED, p), Color an IntEnum of __main__: protocols 2, 5 and 0.
        for p in [
            hex("8002635f5f6275696c74696e5f5f0a676574617474720a7100635f5f6d61696e5f5f0a436f6c6f720a7101580300000052454471028671035271042e"),
            hex("80059537000000000000008c086275696c74696e73948c07676574617474729493948c085f5f6d61696e5f5f948c05436f6c6f729493948c0352454494869452942e"),
            b"c__builtin__\ngetattr\np0\n(c__main__\nColor\np1\nVRED\np2\ntp3\nRp4\n.".to_vec(),
        ] {
            let e = decode::<i64>(&p).unwrap_err();
            assert!(e.0.contains("a __main__.Color member"), "{e}");
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
}
