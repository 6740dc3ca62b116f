//! The scan's model of the pickle machine's stack: what each value is, how deep its
//! containers nest, and what serde-pickle will build from it once shared references expand.

use super::herd::MarkerTuple;
use super::{err, MAX_DEPTH, READ_RAW};
use crate::codec::CodecError;

/// How deep the scan lets containers nest: [`MAX_DEPTH`] for the value, and one more for
/// django-newcache's herd tuple around it (a value at the limit, wrapped, is still read).
pub(super) const SCAN_DEPTH: u32 = MAX_DEPTH + 1;

/// What the scan knows of a value on the pickle machine's stack.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum What {
    /// Nothing the scan needs.
    Other,
    /// A short string (a class's module or name, for `STACK_GLOBAL`).
    Text(String),
    /// An integer, and where it sits when a herd tuple's expiry there can be moved in place.
    Int(i64, Option<super::herd::ExpiryAt>),
    /// A class or function, by `module.name`.
    Global(String),
    /// A `newcache.Marker()`.
    Marker,
    /// `(newcache.Marker, object, None)`: the arguments protocols 0 and 1 give
    /// `copyreg._reconstructor` to make a `Marker()`.
    MarkerArgs,
    /// django-newcache's `(Marker, value, expiry)`.
    Seed(MarkerTuple),
}

/// What one value costs to read, in bytes, before the bytes of a string it holds: this
/// scan's model of it, serde-pickle's value and the serde value made from that. Measured by
/// an outside audit: a pickle of 33 million empty lists (32 KB compressed) took 5.46 GB to
/// read, 165 bytes a value, and one of 16 million small ints 2.29 GB, 143 bytes a value.
/// (It was costed at 48 bytes, with a limit that let that pickle through.)
pub(super) const VALUE_COST: u64 = 160;

/// The most memory reading one pickle may take, by [`VALUE_COST`]: 512 MiB, about 3.3
/// million values. A pickle up to memcached's default item size (1 MiB) never comes near
/// it, however small its values (each opcode byte makes at most one value), nor do Django
/// data an outside audit tried: `[0] * 2_000_000` (8.5 KB compressed), Python's shared rows
/// `[[0] * 100] * 5000` (10 KB). A compressed pickle that inflates to tens of millions of
/// values is refused as the scan counts them, before serde-pickle builds any; one whose
/// `DUP`s and memo references expand to a tree of gigabytes is refused before serde-pickle
/// builds it (60 bytes of `DUP` and `TUPLE3` make 3^17 values).
pub(super) const MAX_READ_COST: u64 = 512 << 20;

/// A value as serde-pickle builds it: a leaf of some cost, or a container (by index into
/// [`Machine::nodes`], so that every reference to one object, through `DUP` or the memo,
/// is the same container and sees what is appended to it later).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Node {
    Leaf(u64),
    Container(usize),
    /// A leaf put in the memo, so that every reference to it is the same one (by index
    /// into [`Machine::shared`], which holds its cost): [`Machine::occurrences`] counts
    /// them.
    Shared(usize),
}

/// A value on the pickle machine's stack: how deep its containers nest, what it is, and
/// the object it is.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) depth: u32,
    pub(super) what: What,
    pub(super) node: Node,
}

impl Slot {
    pub(super) fn leaf(what: What) -> Slot {
        Slot::bytes(what, 0)
    }

    /// A leaf holding `n` bytes of a string.
    pub(super) fn bytes(what: What, n: usize) -> Slot {
        Slot {
            depth: 0,
            what,
            node: Node::Leaf(VALUE_COST.saturating_add(n as u64)),
        }
    }
}

/// The pickle machine's stack, as far as the scan follows it.
#[derive(Debug, Default)]
pub(super) struct Machine {
    pub(super) stack: Vec<Slot>,
    pub(super) marks: Vec<usize>,
    pub(super) memo: Vec<Option<Slot>>,
    pub(super) markers: usize,
    /// Every container's elements.
    pub(super) nodes: Vec<Vec<Node>>,
    /// The cost of every memoized leaf ([`Node::Shared`]).
    pub(super) shared: Vec<u64>,
    /// What the values pushed so far cost ([`VALUE_COST`]); [`MAX_READ_COST`] at most.
    pub(super) pushed: u64,
}

impl Machine {
    pub(super) fn pop(&mut self) -> Result<Slot, CodecError> {
        self.stack
            .pop()
            .ok_or_else(|| err("not a pickle: stack underflow"))
    }

    pub(super) fn top(&mut self) -> Result<&mut Slot, CodecError> {
        self.stack
            .last_mut()
            .ok_or_else(|| err("not a pickle: stack underflow"))
    }

    pub(super) fn push(&mut self, slot: Slot) -> Result<(), CodecError> {
        if slot.depth > SCAN_DEPTH {
            return Err(too_deep());
        }
        // Counted as they come: the model of millions of values took gigabytes before the
        // check of the whole tree ran (an outside audit: 5.46 GB for 32 KB compressed).
        let cost = match slot.node {
            Node::Leaf(cost) => cost,
            Node::Container(_) | Node::Shared(_) => VALUE_COST,
        };
        self.pushed = self.pushed.saturating_add(cost);
        if self.pushed > MAX_READ_COST {
            return Err(err(format!(
                "the pickle makes more values than newcache reads: past {MAX_READ_COST} bytes at {VALUE_COST} bytes a value; {READ_RAW}"
            )));
        }
        self.stack.push(slot);
        Ok(())
    }

    /// Pops everything down to the last MARK, and the mark.
    pub(super) fn pop_mark(&mut self) -> Result<Vec<Slot>, CodecError> {
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
    pub(super) fn container(&mut self, items: &[Slot]) -> Slot {
        self.nodes.push(items.iter().map(|s| s.node).collect());
        Slot {
            depth: items.iter().map(|s| s.depth).max().unwrap_or(0) + 1,
            what: What::Other,
            node: Node::Container(self.nodes.len() - 1),
        }
    }

    /// True when `slot` is a container with nothing in it (`()`, `[]`, `{}`).
    pub(super) fn is_empty_container(&self, slot: &Slot) -> bool {
        matches!(slot.node, Node::Container(id) if self.nodes.get(id).is_some_and(Vec::is_empty))
    }

    /// Adds `items` to the container on top of the stack.
    pub(super) fn fill(&mut self, items: &[Slot]) -> Result<(), CodecError> {
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
            return Err(too_deep());
        }
        Ok(())
    }

    /// Walks the tree serde-pickle will build from `root`, expanding every shared reference
    /// as it will: refuses a tree that costs more than `limit` bytes, nests deeper than
    /// [`SCAN_DEPTH`] (containers filled after they were nested are counted here), or holds
    /// itself. Returns how deep the tree nests.
    pub(super) fn check_expansion(&self, root: Node, limit: u64) -> Result<u32, CodecError> {
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
                Node::Shared(id) => (self.shared.get(id).copied().unwrap_or(VALUE_COST), 0),
                Node::Container(c) => match state.get(c).copied() {
                    Some(State::Done { cost, depth }) => (cost, depth),
                    Some(State::Open) => {
                        return Err(err("the pickle holds a container that holds itself"))
                    }
                    _ => {
                        if path.len() >= SCAN_DEPTH as usize {
                            return Err(too_deep());
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
                return Err(if total > limit {
                    err(format!("the pickle's shared references (one object referred to again and again, as Python's [s] * 6000 does) expand past {limit} bytes once each is read as a value of its own, more than newcache reads (Python keeps them shared); {READ_RAW}, or store it without repeating a large object"))
                } else {
                    too_deep()
                });
            }
        }
        Ok(root_depth)
    }

    /// How many times each container and each memoized leaf appears in the tree
    /// serde-pickle builds from `root` (every shared reference expanded): `(containers,
    /// shared leaves)`, by index. Call it on a tree [`Machine::check_expansion`] accepted
    /// (no container holds itself); counts saturate.
    pub(super) fn occurrences(&self, root: Node) -> (Vec<u64>, Vec<u64>) {
        let mut containers = vec![0u64; self.nodes.len()];
        let mut shared = vec![0u64; self.shared.len()];
        let Node::Container(root) = root else {
            if let Node::Shared(id) = root {
                if let Some(n) = shared.get_mut(id) {
                    *n = 1;
                }
            }
            return (containers, shared);
        };
        // The containers reachable from the root, each after every container holding it
        // (reversed depth-first post-order), so a container's count is complete before it
        // is handed to what it holds.
        let mut seen = vec![false; self.nodes.len()];
        let mut order = Vec::new();
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        if let Some(s) = seen.get_mut(root) {
            *s = true;
        }
        while let Some(&(id, next)) = path.last() {
            let child = self.nodes.get(id).and_then(|e| e.get(next)).copied();
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            match child {
                None => {
                    order.push(id);
                    path.pop();
                }
                Some(Node::Container(c)) if seen.get(c) == Some(&false) => {
                    if let Some(s) = seen.get_mut(c) {
                        *s = true;
                    }
                    path.push((c, 0));
                }
                Some(_) => {}
            }
        }
        if let Some(n) = containers.get_mut(root) {
            *n = 1;
        }
        for &id in order.iter().rev() {
            let times = containers.get(id).copied().unwrap_or(0);
            for child in self.nodes.get(id).into_iter().flatten() {
                let count = match *child {
                    Node::Container(c) => containers.get_mut(c),
                    Node::Shared(l) => shared.get_mut(l),
                    Node::Leaf(_) => None,
                };
                if let Some(count) = count {
                    *count = count.saturating_add(times);
                }
            }
        }
        (containers, shared)
    }

    pub(super) fn memoize(&mut self, index: usize, limit: usize) -> Result<(), CodecError> {
        if index > limit {
            return Err(err("bad memo index"));
        }
        // A leaf becomes one object every reference shares (serde-pickle puts it in its
        // memo and leaves a reference in its place).
        let shared_id = self.shared.len();
        let top = self.top()?;
        if let Node::Leaf(cost) = top.node {
            top.node = Node::Shared(shared_id);
            self.shared.push(cost);
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

/// A pickle nesting containers deeper than [`MAX_DEPTH`]: refused, as newcache reads values
/// recursively (Python reads it; its own limit is the interpreter's).
pub(super) fn too_deep() -> CodecError {
    err(format!(
        "the pickle nests containers deeper than {MAX_DEPTH}, more than newcache reads (Python reads it); {READ_RAW}, or store it flatter"
    ))
}

#[cfg(test)]
mod tests {
    use crate::codec::pickle::{decode, MEMOIZE, PROTO, SHORT_BINUNICODE, STOP, TUPLE3};

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
        p.extend(std::iter::repeat_n([b'h', 0], 4000).flatten());
        p.push(b'l'); // a list of 4,000 references to it
        p.extend_from_slice(&[b'h', 0, b'(', b'B', 0xe8, 0x03, 0, 0]); // then fill it
        p.extend(std::iter::repeat_n(0u8, 1000));
        p.extend(std::iter::repeat_n(b'N', 1000));
        p.extend_from_slice(&[b'e', b'0', STOP]);
        // 4,000 copies of a list of 1,001 values (one holding 1,000 bytes): 4000 * 1001 * 160.
        let decoded = decode::<serde_pickle::Value>(&p).map(|_| ());
        assert!(
            decoded.as_ref().is_err_and(|e| e.0.contains("expand past")),
            "{decoded:?}"
        );
        // Sharing within the limit decodes: a string referenced 100 times.
        let mut p = vec![PROTO, 2, SHORT_BINUNICODE, 1, b'a', MEMOIZE, b'0', b'('];
        p.extend(std::iter::repeat_n([b'h', 0], 100).flatten());
        p.extend_from_slice(&[b'l', STOP]);
        let v: Vec<String> = decode(&p).unwrap();
        assert_eq!(v, vec!["a"; 100]);
        // Values the pickle makes one by one count as they come: a list of four million
        // Nones (640 MB to read) is refused; a pickle of memcached's default item size, a
        // list of half a million small ints (two bytes each), is read, and so are Python's
        // shared rows, `[[0] * 100] * 5000` (500,000 values once expanded).
        let mut p = vec![PROTO, 2, b']', b'('];
        p.resize(p.len() + 4_000_000, b'N');
        p.extend_from_slice(b"e.");
        let e = decode::<Vec<()>>(&p).unwrap_err();
        assert!(e.0.contains("more values than newcache reads"), "{e}");
        let mut p = vec![PROTO, 2, b']', b'('];
        p.extend(std::iter::repeat_n([b'K', 7], 500_000).flatten());
        p.extend_from_slice(b"e.");
        assert_eq!(p.len(), 1_000_006);
        let v: Vec<u8> = decode(&p).unwrap();
        assert!(v.len() == 500_000 && v.iter().all(|n| *n == 7));
        let mut p = vec![PROTO, 2, b']', b'(', b']', MEMOIZE, b'('];
        p.extend(std::iter::repeat_n([b'K', 0], 100).flatten());
        p.push(b'e');
        p.extend(std::iter::repeat_n([b'h', 0], 4999).flatten());
        p.extend_from_slice(b"e.");
        let rows: Vec<Vec<u8>> = decode(&p).unwrap();
        assert!(rows.len() == 5000 && rows.iter().all(|r| r == &[0; 100]));
        // One shared container memoized 800 times and referenced 100,000 times: the rewrite
        // that lets serde-pickle read shared objects (`Scan::unshared`) would add 80 million
        // references (a 241-byte compressed pickle took 3.2 s and 488 MB: an outside audit).
        let mut p = vec![PROTO, 4, b']', MEMOIZE, b'0', b'(', b'h', 0, b'l'];
        p.extend(std::iter::repeat_n(MEMOIZE, 800));
        p.extend_from_slice(b"0(");
        p.extend(std::iter::repeat_n([b'h', 1], 100_000).flatten());
        p.extend_from_slice(b"l.");
        assert!(decode::<Vec<Vec<Vec<u32>>>>(&p).is_err());
        // A protocol-0 integer of a million digits is refused before it is parsed (1.8 s of
        // CPU, growing with the square of its length: an outside audit); one of Python's
        // 4300 digits is read (and then has no serde form: no Rust integer holds it).
        let mut p = vec![b'L'];
        p.resize(1_000_001, b'7');
        p.extend_from_slice(b"L\n.");
        let e = decode::<serde_pickle::Value>(&p).unwrap_err();
        assert!(e.0.contains("4302"), "{e}");
        let mut p = vec![b'L'];
        p.resize(4301, b'7');
        p.extend_from_slice(b"L\n.");
        let e = decode::<serde_pickle::Value>(&p).unwrap_err();
        assert!(!e.0.contains("4302"), "{e}");
        assert!(decode::<u8>(b"L7L\n.").is_ok_and(|n| n == 7));
        // A list that holds itself is an error, not a hang.
        let p = [PROTO, 2, b']', MEMOIZE, b'h', 0, b'a', STOP];
        let e = decode::<serde_pickle::Value>(&p).unwrap_err();
        assert!(e.0.contains("holds itself"), "{e}");
    }
}
