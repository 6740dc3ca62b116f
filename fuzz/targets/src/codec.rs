//! The value codecs (`newcache::codec`): `decode_bounded::<T>` over arbitrary bytes and
//! flags for several `T`, and django-newcache's herd tuple (`codec::pickle::marker`,
//! `with_expiry`, `wrap_marker`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use newcache::codec::pickle::ExpiryAt;
use newcache::codec::{self, pickle, ValueCodec, FLAG_INT, FLAG_PICKLE, FLAG_TEXT, FLAG_ZLIB};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

/// The inflate limit the targets decode with: small, so a zlib bomb costs little.
const INFLATE_LIMIT: usize = 64 * 1024;

const ALL: &[ValueCodec] = &[ValueCodec::Bincode, ValueCodec::Json, ValueCodec::Pickle];
/// JSON parses floats back to the nearest double, not always to the same bits, and has no
/// NaN or infinity: values with floats round-trip through the other two.
const NOT_JSON: &[ValueCodec] = &[ValueCodec::Bincode, ValueCodec::Pickle];
/// bincode cannot read a self-describing type (`deserialize_any`).
const SELF_DESCRIBING: &[ValueCodec] = &[ValueCodec::Json, ValueCodec::Pickle];

/// A struct, as a service caches one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    name: String,
    ids: Vec<u32>,
    active: Option<bool>,
    tags: BTreeMap<String, i64>,
    pairs: Vec<(String, i64)>,
    kind: Kind,
}

/// An enum with every kind of variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Unit,
    Newtype(String),
    Tuple(i32, bool),
    Struct { id: u64, label: Option<String> },
}

/// `decode_bounded::<T>` over arbitrary bytes and flags.
///
/// Input layout: byte 0 picks `T` (String, `Vec<u8>`, i64, u64, bool, f64, a struct,
/// `HashMap<String, Vec<i64>>`, `Option<Vec<String>>`, a tuple, an enum, char, i128, u8,
/// `Vec<Option<f64>>`, `Vec<Vec<u8>>`, `serde_json::Value`, `IgnoredAny`), bytes 1-4 are the
/// flags (little-endian), byte 5 the offset the value starts at (0 below 128, else byte - 128);
/// the rest is the item's bytes.
///
/// Checks: no panic; `decode` (borrowed) and `decode_bounded` (the buffer handed over, from
/// the offset) agree; a decoded value is written back by `codec::encode` with each codec and
/// reads back as itself, and so does its zlib-compressed form (flag 8, as pylibmc writes);
/// `codec::display` renders anything.
pub fn value_codec(data: &[u8]) {
    let mut input = crate::Input::new(data);
    let which = input.u8();
    let flags = input.u32();
    let offset = match input.u8() {
        b @ 128.. => usize::from(b - 128),
        _ => 0,
    };
    let bytes = input.rest();
    match which % 18 {
        0 => check::<String>(bytes, offset, flags, PartialEq::eq, ALL),
        1 => check::<Vec<u8>>(bytes, offset, flags, PartialEq::eq, ALL),
        2 => check::<i64>(bytes, offset, flags, PartialEq::eq, ALL),
        3 => check::<u64>(bytes, offset, flags, PartialEq::eq, ALL),
        4 => check::<bool>(bytes, offset, flags, PartialEq::eq, ALL),
        5 => check::<f64>(bytes, offset, flags, exact, NOT_JSON),
        6 => check::<Record>(bytes, offset, flags, PartialEq::eq, ALL),
        7 => check::<HashMap<String, Vec<i64>>>(bytes, offset, flags, PartialEq::eq, ALL),
        8 => check::<Option<Vec<String>>>(bytes, offset, flags, PartialEq::eq, ALL),
        9 => check::<(String, i64, bool)>(bytes, offset, flags, PartialEq::eq, ALL),
        10 => check::<Kind>(bytes, offset, flags, PartialEq::eq, ALL),
        11 => check::<char>(bytes, offset, flags, PartialEq::eq, ALL),
        12 => check::<i128>(bytes, offset, flags, PartialEq::eq, ALL),
        13 => check::<u8>(bytes, offset, flags, PartialEq::eq, ALL),
        14 => check::<Vec<Option<f64>>>(
            bytes,
            offset,
            flags,
            |a, b| {
                a.len() == b.len()
                    && a.iter().zip(b).all(|(x, y)| match (x, y) {
                        (Some(x), Some(y)) => exact(x, y),
                        (x, y) => x.is_none() && y.is_none(),
                    })
            },
            NOT_JSON,
        ),
        15 => check::<Vec<Vec<u8>>>(bytes, offset, flags, PartialEq::eq, ALL),
        16 => check_but::<serde_json::Value>(
            bytes,
            offset,
            flags,
            PartialEq::eq,
            SELF_DESCRIBING,
            empty_sequence,
        ),
        _ => {
            let _ =
                codec::decode_bounded::<IgnoredAny>(bytes.to_vec(), offset, flags, INFLATE_LIMIT);
        }
    }
    let _ = codec::display(bytes, flags);
}

/// Floats compare by their bits (NaN equal to any NaN).
fn exact(a: &f64, b: &f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Decodes `bytes` from `offset` with `flags` as a `T` both ways, then round-trips what
/// decoded through `codecs`.
fn check<T: DeserializeOwned + Serialize + Debug + 'static>(
    bytes: &[u8],
    offset: usize,
    flags: u32,
    same: fn(&T, &T) -> bool,
    codecs: &[ValueCodec],
) {
    check_but::<T>(bytes, offset, flags, same, codecs, |_| false);
}

/// [`check`], with no round trip for values `known` says newcache does not read back.
fn check_but<T: DeserializeOwned + Serialize + Debug + 'static>(
    bytes: &[u8],
    offset: usize,
    flags: u32,
    same: fn(&T, &T) -> bool,
    codecs: &[ValueCodec],
    known: fn(&T) -> bool,
) {
    let owned = codec::decode_bounded::<T>(bytes.to_vec(), offset, flags, INFLATE_LIMIT);
    if flags & FLAG_ZLIB == 0 {
        // `decode` inflates up to the default limit, not INFLATE_LIMIT: compared only
        // where nothing is inflated.
        let tail = bytes.get(offset..).unwrap_or_default();
        let borrowed = codec::decode::<T>(tail, flags);
        match (&owned, &borrowed) {
            (Ok(a), Ok(b)) => assert!(
                same(a, b),
                "flags {flags:#x}: decode_bounded gave {a:?}, decode {b:?}"
            ),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("flags {flags:#x}: decode_bounded gave {a:?}, decode {b:?}"),
        }
    }
    if let Some(value) = owned.as_ref().ok().filter(|v| !known(v)) {
        for &codec in codecs {
            round_trip(value, codec, same);
        }
    }
}

/// `value`, encoded with `codec` (herd off: the flags `encode` returns are the item's),
/// decodes as itself, plain and zlib-compressed.
fn round_trip<T: DeserializeOwned + Serialize + Debug + 'static>(
    value: &T,
    codec: ValueCodec,
    same: fn(&T, &T) -> bool,
) {
    if codec == ValueCodec::Pickle && beyond_i64(value) {
        return;
    }
    if codec == ValueCodec::Json && has_float(value) {
        return;
    }
    let mut out = Vec::new();
    let Ok(flags) = codec::encode(value, &mut out, codec) else {
        // A value the codec cannot write (pickle's integers past 64 bits...) is an error
        // at `set`, which is fine.
        return;
    };
    let context = || format!("{value:?} written with {codec:?} as flags {flags:#x}: {out:?}");
    match codec::decode::<T>(&out, flags) {
        Ok(back) => assert!(same(value, &back), "{} reads back as {back:?}", context()),
        Err(e) => panic!("{} does not read back: {e}", context()),
    }
    if let Some(compressed) = codec::deflate(&out) {
        let limit = out.len().max(1);
        match codec::decode_bounded::<T>(compressed, 0, flags | FLAG_ZLIB, limit) {
            Ok(back) => assert!(
                same(value, &back),
                "{}, compressed, reads back as {back:?}",
                context()
            ),
            Err(e) => panic!("{}, compressed, does not read back: {e}", context()),
        }
    }
}

/// An empty sequence, which newcache writes as empty bytes (flag 0, what an empty `Vec<u8>`
/// is): a typed `Vec<T>` reads it back, a self-describing type (`deserialize_any`) reads
/// bytes and fails. Known, reported with the fuzzing run; left out of the round trips.
fn empty_sequence(value: &serde_json::Value) -> bool {
    matches!(value, serde_json::Value::Array(a) if a.is_empty())
}

/// A value holding a float: serde_json, as newcache builds it (without its
/// `float_roundtrip` feature), may read a float back one bit off (`1.2619383853307227`
/// reads as `1.261938385330723`). Known, reported with the fuzzing run; left out of the
/// JSON round trips.
fn has_float<T: Serialize>(value: &T) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) => n.is_f64(),
            serde_json::Value::Array(a) => a.iter().any(walk),
            serde_json::Value::Object(o) => o.values().any(walk),
            _ => false,
        }
    }
    serde_json::to_value(value).map_or(true, |v| walk(&v))
}

/// A value holding an integer past `i64::MAX`: serde-pickle writes it (as `LONG1`, as
/// Python does) and refuses to read it back ("integer too large"), so under `codec=pickle`
/// or `envelope=django-newcache` it cannot be read back. Known, reported with the fuzzing
/// run; left out of the round trips.
fn beyond_i64<T: Serialize>(value: &T) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) => n.is_u64() && n.as_i64().is_none(),
            serde_json::Value::Array(a) => a.iter().any(walk),
            serde_json::Value::Object(o) => o.values().any(walk),
            _ => false,
        }
    }
    // Values serde_json cannot hold (i128s past 64 bits) count as beyond too.
    serde_json::to_value(value).map_or(true, |v| walk(&v))
}

/// django-newcache's herd tuple: `pickle::marker` over arbitrary bytes, `with_expiry` on
/// what it finds, `wrap_marker` around arbitrary values.
///
/// Input layout: bytes 0-7 a new expiry in seconds (little-endian), bytes 8-11 the flags for
/// `wrap_marker`; the rest is the item's bytes.
///
/// Checks: no panic; a marker's expiry is where `expiry_at` says; `with_expiry` moves it and
/// leaves the value alone; `wrap_marker` writes a tuple `marker` finds, with the expiry
/// given, and the wrapped value reads as the value.
pub fn pickle_marker(data: &[u8]) {
    let mut input = crate::Input::new(data);
    let expiry = input.u64();
    let flags = input.u32();
    let bytes = input.rest();

    let as_value = codec::decode::<serde_json::Value>(bytes, FLAG_PICKLE);
    let _ = codec::decode::<IgnoredAny>(bytes, FLAG_PICKLE);
    if let Ok(Some(marker)) = pickle::marker(bytes) {
        let outside = || panic!("{marker:?} outside a {}-byte pickle", bytes.len());
        match marker.expiry_at {
            Some(ExpiryAt::BinInt(at)) => {
                let field = bytes.get(at..at.saturating_add(4)).unwrap_or_else(outside);
                let secs = i32::from_le_bytes(field.try_into().unwrap_or_default());
                assert_eq!(i64::from(secs), marker.expiry_secs, "{marker:?}");
            }
            Some(ExpiryAt::Decimal(start, end)) => {
                let digits = bytes.get(start..end).unwrap_or_else(outside);
                let secs: i64 = String::from_utf8_lossy(digits).parse().unwrap_or(-1);
                assert_eq!(secs, marker.expiry_secs, "{marker:?}");
            }
            None => {}
        }
        // Whether the expiry can move to `expiry` in place.
        let fits = match marker.expiry_at {
            Some(ExpiryAt::BinInt(_)) => i32::try_from(expiry).is_ok(),
            Some(ExpiryAt::Decimal(start, end)) => {
                i64::try_from(expiry).is_ok() && expiry.to_string().len() == end - start
            }
            None => false,
        };
        let moved = pickle::with_expiry(bytes, &marker, expiry);
        match (&moved, marker.expiry_at, fits) {
            (Some(moved), Some(_), true) => {
                let again = pickle::marker(moved);
                let Ok(Some(again)) = again else {
                    panic!("{marker:?} moved to {expiry} is no longer a marker: {again:?}");
                };
                assert_eq!(again.expiry_secs, i64::try_from(expiry).unwrap_or(-1));
                assert_eq!(again.expiry_at, marker.expiry_at);
                let value = codec::decode::<serde_json::Value>(moved, FLAG_PICKLE);
                assert_eq!(
                    value.ok(),
                    as_value.as_ref().ok().cloned(),
                    "moving the expiry changed the value"
                );
            }
            (None, None, _) | (None, Some(_), false) => {}
            (moved, at, _) => panic!(
                "with_expiry({expiry}) of {marker:?} (expiry at {at:?}) gave {:?}",
                moved.as_ref().map(Vec::len)
            ),
        }
    }

    // A value as newcache's codec writes it, wrapped in the tuple.
    match flags & 0b11 {
        0 => wrapped::<String>(bytes, FLAG_TEXT, expiry),
        // Bytes wrapped in the tuple (`SHORT_BINBYTES`) do not read back as a `Vec<u8>`, which
        // asks serde-pickle for a sequence: known, reported with the fuzzing run. The
        // wrapping itself is still exercised below.
        1 => {}
        2 => {
            wrapped::<i64>(bytes, FLAG_INT, expiry);
            wrapped::<u64>(bytes, FLAG_INT, expiry);
        }
        _ => {
            if let Some(value) = as_value.as_ref().ok().filter(|v| !empty_sequence(v)) {
                wrap_encoded(value, expiry);
            }
            if let Ok(map) = codec::decode::<HashMap<String, Vec<i64>>>(bytes, FLAG_PICKLE) {
                wrap_encoded(&map, expiry);
            }
        }
    }
    // And arbitrary bytes with arbitrary flags: an error or a pickle, never a panic.
    if let Ok(wrapped) = pickle::wrap_marker(bytes, flags, expiry) {
        let _ = pickle::marker(&wrapped);
        let _ = codec::decode::<serde_json::Value>(&wrapped, FLAG_PICKLE);
    }
}

/// `bytes` with `flags`, read as a `T`, wrapped in the herd tuple: the tuple reads as the
/// same `T`, with the expiry given.
fn wrapped<T: DeserializeOwned + Serialize + Debug + PartialEq + 'static>(
    bytes: &[u8],
    flags: u32,
    expiry: u64,
) {
    let Some(value) = codec::decode::<T>(bytes, flags)
        .ok()
        .filter(|v| !beyond_i64(v))
    else {
        return;
    };
    let wrapped = pickle::wrap_marker(bytes, flags, expiry)
        .unwrap_or_else(|e| panic!("{value:?} (flags {flags:#x}) cannot be wrapped: {e}"));
    check_wrapped(&value, &wrapped, expiry);
}

/// `value` encoded by the pickle codec and wrapped in the herd tuple reads as itself.
fn wrap_encoded<T: Serialize + DeserializeOwned + Debug + PartialEq + 'static>(
    value: &T,
    expiry: u64,
) {
    if beyond_i64(value) {
        return;
    }
    let mut out = Vec::new();
    let Ok(flags) = codec::encode(value, &mut out, ValueCodec::Pickle) else {
        return;
    };
    let wrapped = pickle::wrap_marker(&out, flags, expiry)
        .unwrap_or_else(|e| panic!("{value:?} (flags {flags:#x}) cannot be wrapped: {e}"));
    check_wrapped(value, &wrapped, expiry);
}

fn check_wrapped<T: DeserializeOwned + Debug + PartialEq + 'static>(
    value: &T,
    wrapped: &[u8],
    expiry: u64,
) {
    match pickle::marker(wrapped) {
        Ok(Some(marker)) => assert_eq!(
            u64::try_from(marker.expiry_secs).ok(),
            Some(expiry),
            "{value:?} wrapped with expiry {expiry}"
        ),
        // Expiries past i64 have no MarkerTuple form.
        Err(_) if i64::try_from(expiry).is_err() => return,
        other => panic!("{value:?} wrapped with expiry {expiry}: marker gives {other:?}"),
    }
    match codec::decode::<T>(wrapped, FLAG_PICKLE) {
        Ok(back) => assert_eq!(&back, value, "wrapped with expiry {expiry}"),
        Err(e) => panic!("{value:?} wrapped with expiry {expiry} does not read back: {e}"),
    }
}
