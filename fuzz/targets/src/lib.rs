//! The bodies of newcache's fuzz targets.
//!
//! Each target is a function from arbitrary bytes that must never panic: the cargo-fuzz
//! binaries in `fuzz/fuzz_targets/` hand libFuzzer's inputs to them, and the `replay` binary
//! runs every file of `fuzz/corpus/TARGET/` and `fuzz/regressions/TARGET/` through them on
//! stable Rust (`cargo xtask test` does). Besides "no panic", each checks what it can state
//! about the results (a decoded value's bytes are the reply's bytes, values round-trip
//! through the codecs, and so on): a broken invariant is a panic too.
//!
//! How each target reads its input is documented on its function; the seed files in
//! `fuzz/corpus/` follow those layouts (`fuzz/seeds/make_seeds.py` writes them).

mod codec;
mod herd;
mod reply;
mod url;

pub use codec::{pickle_marker, value_codec};
pub use herd::herd_state;
pub use reply::{meta_reply, text_reply};
pub use url::url;

/// A target's body: arbitrary bytes in, a panic for anything wrong.
pub type Target = fn(&[u8]);

/// Every target, by the name of its cargo-fuzz binary and of its corpus directory.
pub const TARGETS: [(&str, Target); 6] = [
    ("text_reply", text_reply),
    ("meta_reply", meta_reply),
    ("herd_state", herd_state),
    ("value_codec", value_codec),
    ("pickle_marker", pickle_marker),
    ("url", url),
];

/// Reads fixed-size fields off the front of a fuzz input; zeros once it runs out, so every
/// input, however short, is a valid one.
pub(crate) struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    pub(crate) fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.u8();
        }
        out
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    pub(crate) fn f64(&mut self) -> f64 {
        f64::from_le_bytes(self.array())
    }

    /// Everything not read yet.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }
}
