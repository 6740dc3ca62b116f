//! Python pickles (flag 1): reading what Python's clients store, the `pickle` codec, and
//! django-newcache's herd tuple `(newcache.Marker(), value, expiry)`.
//!
//! Reading goes through serde-pickle after a scan of the opcodes, which refuses what has no
//! serde form (a class instance, a `datetime`, a `Decimal`...) with an error naming the class,
//! instead of letting it decode to something else (serde-pickle turns an unknown instance
//! into an empty dict).

mod herd;
mod machine;
mod read;
mod repr;
mod scan;
mod value_de;
mod write;

pub use herd::{marker, with_expiry, wrap_marker, ExpiryAt, MarkerTuple};
pub use read::decode;
pub use repr::repr;
pub use write::encode;

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

/// How deep containers may nest: serde-pickle builds values recursively, and a pickle a few
/// hundred kilobytes long can nest lists a hundred thousand deep (a stack overflow, not an
/// error). (serde_json reads one level less: 127.)
pub const MAX_DEPTH: u32 = 128;

/// What a reader told of a pickle newcache does not read can do instead: the advice every
/// such message ends with, which a refused write (nothing stored) replaces (`write.rs`).
const READ_RAW: &str = "read its bytes with get_raw";

fn err(msg: impl Into<String>) -> CodecError {
    CodecError(msg.into())
}

fn pickle_error(e: serde_pickle::Error) -> CodecError {
    err(format!("pickle: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(super) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A class, a function or a constant pickled as itself is a typed error naming it (it
    /// was serde-pickle's "unresolved global reference", naming nothing). Pickled by Python
    /// 3.11 with protocol 4: `len`, `Ellipsis`, `[1, int]`.
    #[test]
    fn a_function_or_class_pickled_as_itself_is_named() {
        for (pickled, named) in [
            (
                "80049514000000000000008c086275696c74696e73948c036c656e9493942e",
                "builtins.len",
            ),
            (
                "80049519000000000000008c086275696c74696e73948c08456c6c69707369739493942e",
                "builtins.Ellipsis",
            ),
        ] {
            let e = decode::<serde_pickle::Value>(&hex(pickled)).unwrap_err();
            assert!(e.0.contains(named) && e.0.contains("no serde form"), "{e}");
        }
        // `int` itself in a list (serde-pickle reduces a call of it, not it).
        let e = decode::<serde_pickle::Value>(&hex(
            "8004951a000000000000005d94284b018c086275696c74696e73948c03696e74949394652e",
        ))
        .unwrap_err();
        assert!(e.0.contains("builtins.int itself"), "{e}");
    }

    /// Python keeps `bytes` and `str` apart, and so does reading a pickle: `{'a': 1, b'a': 2}`
    /// read as a `HashMap<String, i64>` lost an entry, its two keys made one, and bytes read
    /// as a `String` (an outside audit). A float beyond an `f32` read as one was infinity.
    /// Pickled by Python 3.11 with protocol 5.
    #[test]
    fn bytes_are_not_text_and_a_float_too_large_is_no_f32() {
        let mixed = hex("80059511000000000000007d94288c0161944b01430161944b02752e");
        let e = decode::<HashMap<String, i64>>(&mixed).unwrap_err();
        assert!(e.0.contains("Python bytes where a str"), "{e}");
        let as_value = decode::<serde_pickle::Value>(&mixed).unwrap();
        let serde_pickle::Value::Dict(entries) = as_value else {
            panic!("{as_value:?}")
        };
        assert_eq!(entries.len(), 2, "both keys, told apart");
        let bytes_value = hex("8005950c000000000000007d948c01619443017894732e");
        assert!(decode::<HashMap<String, String>>(&bytes_value).is_err());
        assert_eq!(
            decode::<HashMap<String, Vec<u8>>>(&bytes_value).unwrap(),
            HashMap::from([("a".to_string(), b"x".to_vec())])
        );
        let list = hex("80059509000000000000005d944302616294612e");
        assert!(decode::<Vec<String>>(&list).is_err());
        assert!(decode::<Vec<char>>(&hex("80059508000000000000005d9443016194612e")).is_err());
        assert_eq!(decode::<Vec<Vec<u8>>>(&list).unwrap(), [b"ab".to_vec()]);
        let big = hex("8005950a00000000000000477e37e43c8800759c2e");
        assert_eq!(decode::<f64>(&big).unwrap(), 1e300);
        let e = decode::<f32>(&big).unwrap_err();
        assert!(e.0.contains("beyond an f32"), "{e}");
        assert!(
            decode::<Vec<f32>>(&hex("8005950d000000000000005d94477e37e43c8800759c612e")).is_err()
        );
    }

    /// `b''` in protocols 0 to 2 is `bytes()` (python-memcached pickles with protocol 0,
    /// Django's `MemcachedCache` over it): read as empty bytes, the dict around it kept (an
    /// outside audit: the whole value was an error). Pickled by Python 3.11:
    /// `pickle.dumps({'a': b'', 'b': b'x', 'c': [b'', b'']}, p)` for p in 0, 1, 2.
    #[test]
    fn empty_bytes_of_the_old_protocols_read_as_empty_bytes() {
        use std::collections::BTreeMap;
        for pickled in [
            "286470300a56610a70310a635f5f6275696c74696e5f5f0a62797465730a70320a28745270330a7356620a70340a635f636f646563730a656e636f64650a70350a2856780a70360a566c6174696e310a70370a7470380a5270390a7356630a7031300a286c7031310a67330a6167330a61732e",
            "7d7100285801000000617101635f5f6275696c74696e5f5f0a62797465730a7102295271035801000000627104635f636f646563730a656e636f64650a710528580100000078710658060000006c6174696e317107747108527109580100000063710a5d710b286803680365752e",
            "80027d7100285801000000617101635f5f6275696c74696e5f5f0a62797465730a7102295271035801000000627104635f636f646563730a656e636f64650a7105580100000078710658060000006c6174696e317107867108527109580100000063710a5d710b286803680365752e",
        ] {
            #[derive(Debug, PartialEq, serde::Deserialize)]
            struct V {
                a: Vec<u8>,
                b: Vec<u8>,
                c: Vec<Vec<u8>>,
            }
            let v: V = decode(&hex(pickled)).unwrap();
            assert_eq!(
                v,
                V {
                    a: vec![],
                    b: b"x".to_vec(),
                    c: vec![vec![], vec![]]
                }
            );
            let m: BTreeMap<String, serde_pickle::Value> = decode(&hex(pickled)).unwrap();
            assert_eq!(m.len(), 3);
        }
        // bytes() with arguments is not what pickle writes for bytes: still refused.
        let called = b"c__builtin__\nbytes\n(I3\ntR.";
        assert!(decode::<Vec<u8>>(called).is_err());
    }

    // Stored by django-newcache's own code on Python 3 (pylibmc, protocol 5, herd timeout 60).
    pub(super) const SEED_HELLO: &str = "8005952a000000000000008c086e65776361636865948c064d61726b65729493942981948c0668c3a96c6c6f944ae5cf0e6b87942e";
    pub(super) const SEED_42: &str = "80059523000000000000008c086e65776361636865948c064d61726b65729493942981944b2a4ae5cf0e6b87942e";
    pub(super) const SEED_DICT: &str = "80059510000000000000007d948c0161945d94284b014b0265732e";

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
}
