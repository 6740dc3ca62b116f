//! django-newcache's herd tuple `(newcache.Marker(), value, expiry)`: recognising one
//! ([`marker`]), moving its expiry ([`with_expiry`]) and writing one ([`wrap_marker`]).

use super::scan::scan;
use super::{
    err, BINBYTES, BININT, BININT1, BININT2, BINUNICODE, FRAME, LONG1, MEMOIZE, PROTO,
    SHORT_BINBYTES, SHORT_BINUNICODE, STOP, TUPLE3,
};
use crate::codec::{self, CodecError};

/// The class django-newcache wraps herd-protected values with.
pub(super) const MARKER: &str = "newcache.Marker";

/// django-newcache's herd tuple, found by [`marker`]: the value's soft expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerTuple {
    /// The soft expiry, in Unix seconds (the tuple's third element).
    pub expiry_secs: i64,
    /// Where the expiry sits when a claim can push it forward in place.
    pub expiry_at: Option<ExpiryAt>,
}

/// Where a herd tuple's expiry sits in its pickle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryAt {
    /// A `BININT`'s four little-endian bytes, from this offset (protocols 1 and up).
    BinInt(usize),
    /// An `INT` line's decimal digits, this range (protocol 0, python-memcached's default).
    Decimal(usize, usize),
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
/// expiry is a 4-byte `BININT` (django-newcache's, until 2038) or protocol 0's decimal `INT`
/// and the new one has as many digits (until 2286), else `None`.
pub fn with_expiry(bytes: &[u8], marker: &MarkerTuple, expiry_secs: u64) -> Option<Vec<u8>> {
    let mut out = bytes.to_vec();
    match marker.expiry_at? {
        ExpiryAt::BinInt(at) => {
            let secs = i32::try_from(expiry_secs).ok()?;
            out.get_mut(at..at.checked_add(4)?)?
                .copy_from_slice(&secs.to_le_bytes());
        }
        ExpiryAt::Decimal(start, end) => {
            let digits = i64::try_from(expiry_secs).ok()?.to_string();
            let slot = out.get_mut(start..end)?;
            if slot.len() != digits.len() {
                return None;
            }
            slot.copy_from_slice(digits.as_bytes());
        }
    }
    Some(out)
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
        codec::FLAG_TEXT | codec::FLAG_BYTES => {
            let (short, long) = if flags == codec::FLAG_TEXT {
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
        codec::FLAG_INT => push_int(bytes, out),
        codec::FLAG_PICKLE => {
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
    use crate::codec::pickle::decode;
    use crate::codec::pickle::tests::{hex, SEED_42, SEED_HELLO};

    #[test]
    fn wrapping_writes_the_seeds_exact_bytes() {
        assert_eq!(
            wrap_marker("héllo".as_bytes(), codec::FLAG_TEXT, 1_796_132_837).unwrap(),
            hex(SEED_HELLO)
        );
        assert_eq!(
            wrap_marker(b"42", codec::FLAG_INT, 1_796_132_837).unwrap(),
            hex(SEED_42)
        );
    }

    /// pickle.dumps((newcache.Marker(), 'héllo', 1796132837), 0)
    const PROTO_0: &str = "2863636f70795f7265670a5f7265636f6e7374727563746f720a70300a28636e657763616368650a4d61726b65720a70310a635f5f6275696c74696e5f5f0a6f626a6563740a70320a4e7470330a5270340a5668e96c6c6f0a70350a49313739363133323833370a7470360a2e";

    #[test]
    fn the_tuple_pickled_with_protocols_0_to_2_is_recognised() {
        // pickle.dumps((newcache.Marker(), 'héllo', 1796132837), p) for p = 0, 1, 2: python-memcached
        // pickles with protocol 0 by default (django-newcache falls back to it without
        // pylibmc); an outside audit found protocols 0 and 1 read as a class instance.
        for (p, bytes) in [
            (0, PROTO_0),
            (1, "2863636f70795f7265670a5f7265636f6e7374727563746f720a710028636e657763616368650a4d61726b65720a7101635f5f6275696c74696e5f5f0a6f626a6563740a71024e747103527104580600000068c3a96c6c6f71054ae5cf0e6b7471062e"),
            (2, "8002636e657763616368650a4d61726b65720a710029817101580600000068c3a96c6c6f71024ae5cf0e6b8771032e"),
        ] {
            let bytes = hex(bytes);
            let m = marker(&bytes).unwrap().unwrap_or_else(|| panic!("protocol {p}"));
            assert_eq!(m.expiry_secs, 1_796_132_837, "protocol {p}");
            assert_eq!(decode::<String>(&bytes).unwrap(), "héllo", "protocol {p}");
            // The expiry moves in place: a 4-byte BININT, or protocol 0's ten digits.
            let moved = with_expiry(&bytes, &m, 1_800_000_000).unwrap();
            assert_eq!(marker(&moved).unwrap().unwrap().expiry_secs, 1_800_000_000);
            assert_eq!(decode::<String>(&moved).unwrap(), "héllo");
            assert_eq!(moved.len(), bytes.len(), "protocol {p}");
        }
        // Python 2's protocol 2 (pylibmc's `cPickle.dumps(v, -1)` where django-newcache
        // runs) sets the Marker's empty `__dict__` with BUILD; it was refused (an outside
        // audit). Written by Python 2.7.18: `(newcache.Marker(), u'h\xe9llo', 1796451388)`.
        let py2 = hex("8002636e657763616368650a4d61726b65720a7101298171027d710362580600000068c3a96c6c6f71044a3cac136b872e");
        let m = marker(&py2).unwrap().expect("python 2's tuple");
        assert_eq!(m.expiry_secs, 1_796_451_388);
        assert_eq!(decode::<String>(&py2).unwrap(), "héllo");
        let moved = with_expiry(&py2, &m, 1_800_000_000).unwrap();
        assert_eq!(marker(&moved).unwrap().unwrap().expiry_secs, 1_800_000_000);
        // A Marker given any state is not django-newcache's.
        let build = py2.windows(4).position(|w| w == b"}q\x03b").unwrap();
        let mut stated = py2[..build + 3].to_vec();
        stated.extend_from_slice(b"(K\x01K\x02ub"); // {1: 2}, then BUILD
        stated.extend_from_slice(&py2[build + 4..]);
        let e = decode::<serde_pickle::Value>(&stated).unwrap_err();
        assert!(e.0.contains("newcache.Marker"), "{e}");
        // Protocol 0's expiry is not moved to one of another length.
        let m = marker(&hex(PROTO_0)).unwrap().unwrap();
        assert_eq!(with_expiry(&hex(PROTO_0), &m, 99_999_999_999), None);
        // The dict value, protocol 0, and another class made the same way is still refused.
        let dict = hex("2863636f70795f7265670a5f7265636f6e7374727563746f720a70300a28636e657763616368650a4d61726b65720a70310a635f5f6275696c74696e5f5f0a6f626a6563740a70320a4e7470330a5270340a286470350a56610a70360a286c70370a49310a6149320a617349313739363133323833370a7470380a2e");
        assert!(marker(&dict).unwrap().is_some());
        let d: std::collections::HashMap<String, Vec<i64>> = decode(&dict).unwrap();
        assert_eq!(d["a"], [1, 2]);
        let other = String::from_utf8(dict.clone())
            .unwrap()
            .replace("newcache\nMarker", "newcache\nOther");
        let e = decode::<serde_pickle::Value>(other.as_bytes()).unwrap_err();
        assert!(e.0.contains("newcache.Other"), "{e}");
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
}
