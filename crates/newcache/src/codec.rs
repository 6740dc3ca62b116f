//! The value codec: any serde type to item bytes and flags, and back.
//!
//! Values are stored so that Python's memcached clients (pylibmc, pymemcache,
//! python-memcached, and Django's backends over them) read each one as the same Python value,
//! or raise; never as something else (docs/python-interop.md has the matrix, measured):
//!
//! | value | bytes on the server | flags |
//! |---|---|---|
//! | `Vec<u8>`, `&[u8]`, `serde_bytes` (an empty sequence only of `u8`) | the bytes | 0 ([`FLAG_BYTES`]) |
//! | `String`, `&str`, `char` | UTF-8 | 16 ([`FLAG_TEXT`]) |
//! | integers (`i8`..`u128`) | decimal ASCII, so `incr`/`decr` work | 4 ([`FLAG_INT`]) |
//! | `bool` | `pickle.dumps(True, 2)`: Python reads a bool (pylibmc's own flag 2 reads back as an int) | 1 ([`FLAG_PICKLE`]) |
//! | anything else (structs, maps, sequences, floats, `None`...) | the cache's [`ValueCodec`] | see below |
//!
//! Structured values go through the cache's codec:
//!
//! - `pickle` (feature `pickle`): a Python pickle (protocol 3) with flag 1, so Django's
//!   `cache.get` returns a dict, a list, a float or None: structs and maps become dicts,
//!   sequences lists, tuples tuples, `None` None.
//! - `bincode` (feature `bincode`, the default codec) and `json` (feature `json`): newcache's
//!   own formats, which Python cannot read as values. They are stored with flag 16 (text) or'd
//!   with [`FLAG_BINCODE`] / [`FLAG_JSON`], and the bytes start with [`UNREADABLE`] (0xff,
//!   never valid UTF-8), so every Python client raises `UnicodeDecodeError` instead of
//!   returning bytes that look like a value. Other languages reading JSON skip that byte.
//!
//! Newtype wrappers and `Some(x)` are stored as their content.
//!
//! Reads go by the item's flags, not the cache's choice: a pickle (flag 1) is read whatever
//! the cache's codec, as are the integers and booleans Python writes with flag 2
//! (pymemcache's and python-memcached's int, pylibmc's bool), zlib-compressed values
//! ([`FLAG_ZLIB`], pylibmc's `min_compress_len`; inflated up to a bound) and values bincode
//! or JSON wrote before the 0xff marker existed. A pickle holding something with no serde form
//! (a class instance, a `datetime`) is a typed error naming the class. A value whose codec is
//! not compiled in is a typed error naming the feature.

use std::any::{Any, TypeId};
use std::fmt;
use std::io::Read as _;

use serde::de::{self, DeserializeOwned};
use serde::Serialize;

#[cfg(any(feature = "json", feature = "pickle"))]
mod check;
#[cfg(feature = "pickle")]
pub mod pickle;
mod plain;
mod show;

pub use show::show_within;

use plain::{Bytes, NotPlain, Plain, PlainDe, Probe};

/// Raw bytes (Python `bytes`).
pub const FLAG_BYTES: u32 = 0;
/// A Python pickle (Python's clients for anything but str, int and bytes; newcache for
/// booleans and the `pickle` codec).
pub const FLAG_PICKLE: u32 = 1;
/// pylibmc's bool (`1`/`0`), pymemcache's and python-memcached's int (decimal).
pub const FLAG_BOOL: u32 = 2;
/// An integer as decimal ASCII (pylibmc's int, pymemcache's long).
pub const FLAG_INT: u32 = 4;
/// zlib-compressed, ORed into the others (Python clients, only when smaller).
pub const FLAG_ZLIB: u32 = 8;
/// UTF-8 text (Python `str`).
pub const FLAG_TEXT: u32 = 16;
/// newcache's bincode encoding of any other serde value (bit 9; bit 8 is the herd bit).
pub const FLAG_BINCODE: u32 = 1 << 9;
/// newcache's JSON encoding of any other serde value (bit 10).
pub const FLAG_JSON: u32 = 1 << 10;
/// The byte in front of a bincode or JSON value: invalid UTF-8, so Python's clients, which
/// read flag 16 as text, raise instead of returning bytes.
pub const UNREADABLE: u8 = 0xff;

/// How values that are not plain (structs, maps, sequences, floats, `None`...) are
/// serialized. Each codec is compiled in by the Cargo feature of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueCodec {
    /// bincode 2's standard configuration (feature `bincode`, the default): compact and fast,
    /// read only by bincode with the same types. Python clients raise on it.
    Bincode,
    /// JSON through serde_json (feature `json`): read by other languages (after the 0xff
    /// byte). Python clients raise on it.
    Json,
    /// Python's pickle through serde-pickle (feature `pickle`): Django's `cache.get` returns
    /// the value as a dict, list, float, None...
    Pickle,
}

impl Default for ValueCodec {
    /// bincode when compiled in, else JSON, else pickle.
    fn default() -> Self {
        if cfg!(feature = "bincode") {
            ValueCodec::Bincode
        } else if cfg!(feature = "json") {
            ValueCodec::Json
        } else if cfg!(feature = "pickle") {
            ValueCodec::Pickle
        } else {
            ValueCodec::Bincode
        }
    }
}

impl ValueCodec {
    /// The codec of a URL's `codec=` value.
    pub fn from_name(name: &str) -> Option<ValueCodec> {
        match name {
            "bincode" => Some(ValueCodec::Bincode),
            "json" => Some(ValueCodec::Json),
            "pickle" => Some(ValueCodec::Pickle),
            _ => None,
        }
    }

    /// Its name, as the URL and the Cargo feature spell it.
    pub fn name(self) -> &'static str {
        match self {
            ValueCodec::Bincode => "bincode",
            ValueCodec::Json => "json",
            ValueCodec::Pickle => "pickle",
        }
    }

    /// True when this build of newcache has the codec (its Cargo feature is on).
    pub fn compiled_in(self) -> bool {
        match self {
            ValueCodec::Bincode => cfg!(feature = "bincode"),
            ValueCodec::Json => cfg!(feature = "json"),
            ValueCodec::Pickle => cfg!(feature = "pickle"),
        }
    }

    /// The flags marking values this codec wrote.
    pub fn flag(self) -> u32 {
        match self {
            ValueCodec::Bincode => FLAG_TEXT | FLAG_BINCODE,
            ValueCodec::Json => FLAG_TEXT | FLAG_JSON,
            ValueCodec::Pickle => FLAG_PICKLE,
        }
    }

    fn missing(self) -> CodecError {
        CodecError(format!(
            "the value is {}-encoded, and this build of newcache lacks the `{}` feature; enable it in Cargo.toml",
            self.name(),
            self.name()
        ))
    }

    fn encode<T: Serialize + ?Sized>(self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        match self {
            #[cfg(feature = "bincode")]
            ValueCodec::Bincode => {
                out.push(UNREADABLE);
                bincode::serde::encode_into_std_write(value, out, bincode_config())
                    .map(drop)
                    .map_err(|e| CodecError(format!("bincode: {e}")))
            }
            #[cfg(feature = "json")]
            ValueCodec::Json => {
                if let Some(said) = check::ambiguous(value, true) {
                    return Err(CodecError(format!("json: {said}")));
                }
                out.push(UNREADABLE);
                serde_json::to_writer(out, value).map_err(|e| CodecError(format!("json: {e}")))
            }
            #[cfg(feature = "pickle")]
            ValueCodec::Pickle => pickle::encode(value, out),
            #[allow(unreachable_patterns)]
            _ => {
                let _ = (value, out);
                Err(self.missing())
            }
        }
    }

    fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            #[cfg(feature = "bincode")]
            ValueCodec::Bincode => {
                let (value, used) =
                    bincode_decode(bytes).map_err(|e| CodecError(format!("bincode: {e}")))?;
                if used != bytes.len() {
                    return Err(CodecError(format!(
                        "bincode value used {used} of {} bytes; was it written as another type?",
                        bytes.len()
                    )));
                }
                Ok(value)
            }
            #[cfg(feature = "json")]
            ValueCodec::Json => serde_json::from_slice(bytes).map_err(|e| json_error(&e)),
            #[cfg(feature = "pickle")]
            ValueCodec::Pickle => pickle::decode(bytes),
            #[allow(unreachable_patterns)]
            _ => {
                if self == ValueCodec::Pickle {
                    // newcache's own booleans need no pickle machinery.
                    if let Some(b) = plain::pickled_bool(bytes) {
                        return T::deserialize(plain::PickledBool(b));
                    }
                }
                Err(self.missing())
            }
        }
    }
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

impl de::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError(msg.to_string())
    }

    fn invalid_type(met: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        CodecError(format!("invalid type: {}, expected {expected}", Met(met)))
    }

    fn invalid_value(met: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        CodecError(format!("invalid value: {}, expected {expected}", Met(met)))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        CodecError(format!(
            "unknown variant (a string of {} bytes, not shown), expected one of {expected:?}",
            variant.len()
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        CodecError(format!(
            "unknown field (a string of {} bytes, not shown), expected one of {expected:?}",
            field.len()
        ))
    }
}

/// What a decode error shows of a value it met: a number, a boolean or a kind as it is, a
/// string or bytes only by size, so that a cached secret (a token, an address) read as the
/// wrong type does not reach the logs.
struct Met<'a>(de::Unexpected<'a>);

impl fmt::Display for Met<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            de::Unexpected::Str(s) => write!(f, "a string of {} bytes (not shown)", s.len()),
            de::Unexpected::Bytes(b) => write!(f, "{} bytes (not shown)", b.len()),
            de::Unexpected::Char(_) => f.write_str("a character (not shown)"),
            ref other => other.fmt(f),
        }
    }
}

/// serde_json's error message with the strings it quotes from the value left out (it
/// quotes a string read as another type, and an unknown variant or field): see [`Met`].
#[cfg(feature = "json")]
fn json_error(e: &serde_json::Error) -> CodecError {
    let mut message = e.to_string();
    for (open, shown) in [
        ("string \"", "a string (not shown)"),
        ("unknown variant `", "unknown variant (not shown)"),
        ("unknown field `", "unknown field (not shown)"),
    ] {
        let close = if open.ends_with('"') {
            "\", expected"
        } else {
            "`, expected"
        };
        if let (Some(start), Some(end)) = (message.find(open), message.rfind(close)) {
            if end >= start + open.len() {
                message.replace_range(start..end + close.len(), &format!("{shown}, expected"));
            }
        }
    }
    CodecError(format!("json: {message}"))
}

#[cfg(feature = "bincode")]
fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Decodes a bincode value with a limit on what it may claim: a length prefix is believed
/// (and allocated) before the bytes are read, so a corrupt or hostile 4 GB string length
/// would abort the process. The limit is 32 MiB, or 16 times the value's size when that is
/// more (a varint `u64` of one byte is eight in memory, a short `String` a 24-byte header
/// and its bytes): a fixed 32 MiB refused values newcache had stored itself (an outside
/// audit: 5,000,000 `u64` zeros, 4.8 KB compressed, and a 56 MB `Vec<String>` on a server
/// at `-I 64m`), and the limit is a type in bincode, so it is picked from a few.
#[cfg(feature = "bincode")]
fn bincode_decode<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    const MIB: usize = 1 << 20;
    let claim = DEFAULT_INFLATE_LIMIT.max(bytes.len().saturating_mul(16));
    let config = bincode::config::standard();
    if claim <= 32 * MIB {
        bincode::serde::decode_from_slice(bytes, config.with_limit::<{ 32 * MIB }>())
    } else if claim <= 256 * MIB {
        bincode::serde::decode_from_slice(bytes, config.with_limit::<{ 256 * MIB }>())
    } else if claim <= 2048 * MIB {
        bincode::serde::decode_from_slice(bytes, config.with_limit::<{ 2048 * MIB }>())
    } else {
        bincode::serde::decode_from_slice(bytes, config.with_limit::<{ usize::MAX }>())
    }
}

/// Appends the encoding of `value` to `out` and returns the item flags it needs: plain
/// values as Python clients store them, anything else through `codec`.
pub fn encode<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    codec: ValueCodec,
) -> Result<u32, CodecError> {
    let start = out.len();
    match value.serialize(Probe { out: &mut *out }) {
        Ok(flags) => Ok(flags),
        Err(NotPlain) => {
            out.truncate(start);
            codec.encode(value, out)?;
            Ok(codec.flag())
        }
    }
}

/// Calls `f` with the encoding of `value` and its flags, as [`encode`] makes them: a `str`
/// or byte slice (`serde_bytes`) as the caller's own bytes, without a copy; anything else
/// encoded into `buf` first (cleared).
pub fn with_encoding<T: Serialize + ?Sized, R>(
    value: &T,
    codec: ValueCodec,
    buf: &mut Vec<u8>,
    f: impl FnOnce(&[u8], u32) -> R,
) -> Result<R, CodecError> {
    let mut f = Some(f);
    let mut out = None;
    if value
        .serialize(plain::Direct {
            f: &mut f,
            out: &mut out,
        })
        .is_ok()
    {
        if let Some(r) = out {
            return Ok(r);
        }
    }
    buf.clear();
    let flags = encode(value, buf, codec)?;
    let f = f.ok_or_else(|| CodecError("the value was handed over twice".into()))?;
    Ok(f(buf, flags))
}

/// Decodes item bytes stored with `flags` (herd bits already removed) as a `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], flags: u32) -> Result<T, CodecError> {
    decode_from(Bytes::Borrowed(bytes), 0, flags, DEFAULT_INFLATE_LIMIT)
}

/// Like [`decode`] for the bytes of `value` from `offset` on, taking the buffer over: a
/// `String` or `Vec<u8>` is the buffer itself (its first `offset` bytes removed in place),
/// not a copy, so reading a text or bytes value allocates nothing beyond what the transport
/// read (a `Vec<u8>` too: serde would build one byte by byte). A compressed value is
/// inflated, up to [`DEFAULT_INFLATE_LIMIT`].
pub fn decode_vec<T: DeserializeOwned + 'static>(
    value: Vec<u8>,
    offset: usize,
    flags: u32,
) -> Result<T, CodecError> {
    decode_bounded(value, offset, flags, DEFAULT_INFLATE_LIMIT)
}

/// The most a compressed value may inflate to, unless configured (`inflate_limit`): 32 MiB,
/// 32 times memcached's default item size.
pub const DEFAULT_INFLATE_LIMIT: usize = 32 << 20;

/// [`decode_vec`] with a bound on what a compressed value may inflate to.
#[inline]
pub fn decode_bounded<T: DeserializeOwned + 'static>(
    mut value: Vec<u8>,
    offset: usize,
    flags: u32,
    inflate_limit: usize,
) -> Result<T, CodecError> {
    if flags == FLAG_BYTES && TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        // Bytes asked for as bytes: the buffer itself (serde's Vec<u8> would be built one
        // element at a time, 57 µs per 100 KB).
        drop_header(&mut value, offset);
        return handed_over(value).ok_or_else(|| CodecError("a Vec<u8> that is not one".into()));
    }
    if flags == FLAG_TEXT && TypeId::of::<T>() == TypeId::of::<String>() {
        // Text asked for as a `String`: the buffer itself once its UTF-8 is checked, as
        // serde's path below makes it, without the deserializer's steps around it.
        drop_header(&mut value, offset);
        let text =
            String::from_utf8(value).map_err(|e| CodecError(format!("not UTF-8 text: {e}")))?;
        return handed_over(text).ok_or_else(|| CodecError("a String that is not one".into()));
    }
    decode_from(Bytes::Owned(value), offset, flags, inflate_limit)
}

/// Removes the first `offset` bytes of `value` (what the caller skips); nearly every value has
/// none, and then nothing is done.
fn drop_header(value: &mut Vec<u8>, offset: usize) {
    if offset > 0 {
        value.drain(..offset.min(value.len()));
    }
}

/// `value` as a `T`, when `T` is its own type (checked by the caller with `TypeId`): moved,
/// not boxed, so it costs no allocation.
fn handed_over<T: 'static, U: 'static>(value: U) -> Option<T> {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
}

fn decode_from<'de, T: DeserializeOwned>(
    bytes: Bytes<'de>,
    offset: usize,
    flags: u32,
    inflate_limit: usize,
) -> Result<T, CodecError> {
    fn tail<'a>(bytes: &'a Bytes<'_>, offset: usize) -> &'a [u8] {
        let all = match bytes {
            Bytes::Borrowed(b) => b,
            Bytes::Owned(v) => v.as_slice(),
        };
        all.get(offset..).unwrap_or_default()
    }
    if flags & FLAG_ZLIB != 0 {
        let inflated = inflate(tail(&bytes, offset), inflate_limit)?;
        return decode_from(Bytes::Owned(inflated), 0, flags & !FLAG_ZLIB, inflate_limit);
    }
    match kind(flags)? {
        Kind::Codec(codec) => {
            let value = tail(&bytes, offset);
            // The 0xff in front of values written since it exists (flag 16 set with the
            // codec's bit); before, the codec's bit alone and no marker.
            let value = match (codec != ValueCodec::Pickle && flags & FLAG_TEXT != 0, value) {
                (true, [UNREADABLE, rest @ ..]) => rest,
                (true, _) => {
                    return Err(CodecError(format!(
                        "flags {flags:#x} promise a {} value after a 0xff byte, and it is missing",
                        codec.name()
                    )))
                }
                (false, _) => value,
            };
            codec.decode(value)
        }
        Kind::Plain(kind) => {
            let bytes = match bytes {
                Bytes::Borrowed(b) => Bytes::Borrowed(b.get(offset..).unwrap_or_default()),
                Bytes::Owned(mut v) => {
                    v.drain(..offset.min(v.len()));
                    Bytes::Owned(v)
                }
            };
            T::deserialize(PlainDe { bytes, kind })
        }
    }
}

/// Inflates zlib data, failing once more than `limit` bytes come out.
pub fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::ZlibDecoder::new(compressed)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| CodecError(format!("zlib: {e}")))?;
    if out.len() > limit {
        return Err(CodecError(format!(
            "the compressed value ({} bytes) inflates past {limit} bytes, the inflate limit; raise `inflate_limit` if it is genuine",
            compressed.len()
        )));
    }
    Ok(out)
}

/// zlib-compresses `bytes` (pylibmc's format, flag 8) when that makes them smaller.
pub fn deflate(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(bytes.len() / 2),
        flate2::Compression::default(),
    );
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok().filter(|c| c.len() < bytes.len())
}

/// How a value with these flags is decoded.
enum Kind {
    Codec(ValueCodec),
    Plain(Plain),
}

/// The flag bits a value's encoding is read from: bits 0-7 (Python's clients' type bits,
/// 1 pickle, 2 bool, 4 int, 8 zlib, 16 text, and three more no client here sets) and
/// newcache's codecs' (bincode, JSON). The herd's bit 8 and bits 11-31 (its state, or
/// another application's bits) are not: `16 | 1 << 20` is text to pylibmc and pymemcache,
/// and was an error here (an outside audit). Bits 5-7 stay: another client's compression
/// flag there (PHP's `0x20`) read as text would be wrong bytes, not an error.
pub const ENCODING_BITS: u32 = 0xff | FLAG_BINCODE | FLAG_JSON;

/// The bits a value with these flags is read by: Python's type bits (0-7), and newcache's
/// codec bit (bincode or JSON) only when it is the one set and the type bits are 0 or 16
/// (newcache writes `16 | bit` and a 0xff byte; before the marker, the bit alone). Beside
/// Python's pickle, bool or int bits, or both together, the codec bits are another
/// application's, ignored as Python's clients ignore them: read as a codec's, `4 | 512`
/// with "7" was the bincode -28 where all three Python clients read 7, and spymemcached's
/// float and double (`512 | 1024`, with bit 8 for the double) became bincode and JSON
/// numbers (an outside audit). The decoder and [`show_within`] both go by it.
pub(crate) fn encoding(flags: u32) -> u32 {
    let type_bits = flags & 0xff;
    let codec = flags & (FLAG_BINCODE | FLAG_JSON);
    let own = codec == FLAG_BINCODE || codec == FLAG_JSON;
    if own && (type_bits == FLAG_BYTES || type_bits == FLAG_TEXT) {
        type_bits | codec
    } else {
        type_bits
    }
}

fn kind(flags: u32) -> Result<Kind, CodecError> {
    let flags = encoding(flags);
    for codec in [ValueCodec::Bincode, ValueCodec::Json] {
        if flags & codec.flag() & !FLAG_TEXT != 0 {
            return Ok(Kind::Codec(codec));
        }
    }
    Ok(match flags {
        FLAG_PICKLE => Kind::Codec(ValueCodec::Pickle),
        FLAG_BYTES => Kind::Plain(Plain::Bytes),
        FLAG_TEXT => Kind::Plain(Plain::Text),
        FLAG_INT => Kind::Plain(Plain::Int),
        FLAG_BOOL => Kind::Plain(Plain::IntOrBool),
        f => {
            return Err(CodecError(format!(
                "flags {f:#x} are not a value encoding newcache knows"
            )))
        }
    })
}

/// Renders a stored value for people: [`show_within`], with what the bytes are in its place
/// when they show no value.
pub fn display(bytes: &[u8], flags: u32) -> String {
    display_within(bytes, flags, DEFAULT_INFLATE_LIMIT)
}

/// [`display`], a compressed value inflated up to `inflate_limit` bytes.
pub fn display_within(bytes: &[u8], flags: u32, inflate_limit: usize) -> String {
    show_within(bytes, flags, inflate_limit).unwrap_or_else(|what| format!("<{what}>"))
}

// Most of these store structured values with bincode, the default codec.
#[cfg(all(test, feature = "bincode"))]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    /// Every codec this build has.
    fn built_codecs() -> Vec<ValueCodec> {
        vec![
            ValueCodec::Bincode,
            #[cfg(feature = "json")]
            ValueCodec::Json,
            #[cfg(feature = "pickle")]
            ValueCodec::Pickle,
        ]
    }

    fn enc<T: Serialize + ?Sized>(v: &T) -> (Vec<u8>, u32) {
        let mut out = Vec::new();
        let flags = encode(v, &mut out, ValueCodec::Bincode).unwrap();
        (out, flags)
    }

    /// A value read as the wrong type is not quoted in the error: a cached token read as a
    /// number, an enum or a struct would otherwise reach the logs (pickle, JSON and the
    /// plain values alike).
    /// Bits 9 and 10 beside Python's pickle, bool or int bits, or both together, are another
    /// application's: ignored, as Python's clients ignore them, not read as newcache's
    /// bincode or JSON (an outside audit: `4 | 512` with "7" read as -28).
    #[test]
    fn codec_bits_beside_python_type_bits_are_another_application_s() {
        assert_eq!(decode::<i64>(b"7", FLAG_INT | FLAG_BINCODE).unwrap(), 7);
        assert_eq!(decode::<i64>(b"7", FLAG_BOOL | FLAG_JSON).unwrap(), 7);
        let both = FLAG_BINCODE | FLAG_JSON;
        assert_eq!(decode::<String>(b"abc", FLAG_TEXT | both).unwrap(), "abc");
        // spymemcached's double 1.5 (its flags 7 << 8) and float (6 << 8): the bytes, as
        // pymemcache returns them, and no number.
        let double = 1.5f64.to_bits().to_be_bytes();
        assert!(decode::<f64>(&double, 7 << 8).is_err());
        assert_eq!(decode::<Vec<u8>>(&double, 7 << 8).unwrap(), double);
        assert!(decode::<f32>(&1.5f32.to_bits().to_be_bytes(), 6 << 8).is_err());
        // newcache's own: one codec bit, with 16 and the marker, or alone (written before
        // the marker existed).
        let (bytes, flags) = enc(&vec![1u16, 2]);
        assert_eq!(decode::<Vec<u16>>(&bytes, flags).unwrap(), [1, 2]);
        assert_eq!(
            decode::<Vec<u16>>(&bytes[1..], FLAG_BINCODE).unwrap(),
            [1, 2]
        );
    }

    #[test]
    fn decode_errors_do_not_quote_the_strings_they_met() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        enum Color {
            Red,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        #[serde(deny_unknown_fields)]
        struct S {
            a: i64,
        }
        let secret = "tok-3f9a1c";
        let codecs = built_codecs();
        let map = std::collections::BTreeMap::from([(secret, 1)]);
        for codec in codecs {
            let (mut listed, mut mapped) = (Vec::new(), Vec::new());
            let list_flags = encode(&vec![secret], &mut listed, codec).unwrap();
            let map_flags = encode(&map, &mut mapped, codec).unwrap();
            let errors = [
                decode::<Vec<i64>>(&listed, list_flags).unwrap_err(),
                decode::<Vec<Color>>(&listed, list_flags).unwrap_err(),
                decode::<Vec<char>>(&listed, list_flags).unwrap_err(),
                decode::<S>(&mapped, map_flags).unwrap_err(),
                decode::<i64>(secret.as_bytes(), FLAG_TEXT).unwrap_err(),
            ];
            for e in errors {
                assert!(!e.0.contains(secret), "{codec:?}: {e}");
            }
        }
    }

    /// Booleans are written as pickles of `True`/`False`: read back as a bool, and as an
    /// `Option<bool>` or a newtype of one, in every codec (an outside audit: `Some(false)`
    /// was written and never read back), and Python's own pickled `True` likewise.
    /// Every codec reads an `f64` back as written: JSON's default parser was one step off
    /// for about 3 in 10 random ones (`0.01 * 1.1` read as `0.011`: an outside audit). And
    /// a number beyond an `f32` read as one is an error, not infinity.
    #[test]
    fn floats_read_back_exactly_and_too_large_is_no_f32() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Price {
            amount: f64,
        }
        let mut x = 0.011_000_399_999_999_999_f64;
        let mut floats = vec![0.01 * 1.1, x, f64::MAX, f64::MIN_POSITIVE, -0.0, 1e-300];
        for _ in 0..2000 {
            // A spread of mantissas and exponents, each a bit pattern read as a float.
            x = f64::from_bits(
                x.to_bits()
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1),
            );
            if x.is_finite() {
                floats.push(x);
            }
        }
        for codec in built_codecs() {
            for &amount in &floats {
                let mut out = Vec::new();
                let flags = encode(&Price { amount }, &mut out, codec).unwrap();
                let back: Price = decode(&out, flags).unwrap();
                assert_eq!(
                    back.amount.to_bits(),
                    amount.to_bits(),
                    "{codec:?}: {amount:e}"
                );
            }
        }
        for (text, flags) in [("1e+300", FLAG_TEXT), (&"9".repeat(60), FLAG_INT)] {
            let e = decode::<f32>(text.as_bytes(), flags).unwrap_err();
            assert!(e.0.contains("beyond an f32"), "{text}: {e}");
            assert!(decode::<f64>(text.as_bytes(), flags).unwrap().is_finite());
        }
        assert_eq!(decode::<f32>(b"inf", FLAG_TEXT), Ok(f32::INFINITY));
        assert_eq!(decode::<f32>(b"1.5", FLAG_TEXT), Ok(1.5));
    }

    #[test]
    fn booleans_read_back_inside_options_and_newtypes() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct On(bool);
        let codecs = built_codecs();
        for codec in codecs {
            for b in [true, false] {
                let mut out = Vec::new();
                let flags = encode(&Some(b), &mut out, codec).unwrap();
                assert_eq!(
                    decode::<Option<bool>>(&out, flags),
                    Ok(Some(b)),
                    "{codec:?}"
                );
                assert_eq!(decode::<bool>(&out, flags), Ok(b), "{codec:?}");
                let mut out = Vec::new();
                let flags = encode(&On(b), &mut out, codec).unwrap();
                assert_eq!(decode::<On>(&out, flags), Ok(On(b)), "{codec:?}");
            }
        }
        // pymemcache's pickled True (protocol 4).
        let python_true = b"\x80\x04\x88.";
        assert_eq!(
            decode::<Option<bool>>(python_true, FLAG_PICKLE),
            Ok(Some(true))
        );
    }

    /// Flag 2 is pymemcache's and python-memcached's integer: a self-describing type reads
    /// the number, as every Python client does (an untagged enum read `1` as `true`).
    #[test]
    fn flag_two_reads_as_a_number_through_self_describing_types() {
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(untagged)]
        enum BoolOrInt {
            B(bool),
            I(i64),
        }
        assert_eq!(decode::<BoolOrInt>(b"1", FLAG_BOOL), Ok(BoolOrInt::I(1)));
        assert_eq!(decode::<BoolOrInt>(b"0", FLAG_BOOL), Ok(BoolOrInt::I(0)));
        assert_eq!(decode::<BoolOrInt>(b"42", FLAG_BOOL), Ok(BoolOrInt::I(42)));
        // Asked for a bool, pylibmc's bool is one.
        assert_eq!(decode::<bool>(b"1", FLAG_BOOL), Ok(true));
        // Past i64 (pymemcache's `2**63`): the number, as under flag 4 (it was "not a
        // boolean": an outside audit).
        for flags in [FLAG_BOOL, FLAG_INT] {
            assert_eq!(
                decode::<serde_json::Value>(b"9223372036854775808", flags),
                Ok(serde_json::json!(9_223_372_036_854_775_808u64))
            );
            assert_eq!(
                decode::<i128>(b"-9223372036854775809", flags),
                Ok(-9_223_372_036_854_775_809)
            );
            // 2**100 fits an i128, not a JSON number; 2**130 fits nothing.
            let e =
                decode::<serde_json::Value>(b"1267650600228229401496703205376", flags).unwrap_err();
            assert!(e.0.contains("out of range"), "{e}");
            let e = decode::<serde_json::Value>(b"1361129467683753853853498429727072845824", flags)
                .unwrap_err();
            assert!(e.0.contains("not a valid integer"), "{e}");
        }
    }

    /// A text read as a number is one as Python's `str` writes it: a zip code `'02134'` read
    /// as 2134, `'+5'` as 5 (an outside audit). The spaces `decr` leaves after a counter
    /// are not the text's.
    #[test]
    fn text_reads_as_a_number_only_when_written_as_python_writes_numbers() {
        for text in ["02134", "+5", " 42", "-07"] {
            let e = decode::<u64>(text.as_bytes(), FLAG_TEXT)
                .and_then(|_| decode::<i64>(text.as_bytes(), FLAG_TEXT))
                .unwrap_err();
            assert!(e.0.contains("read it as a String"), "{text}: {e}");
        }
        assert_eq!(decode::<u64>(b"42  ", FLAG_TEXT), Ok(42));
        assert_eq!(decode::<u64>(b"0", FLAG_TEXT), Ok(0));
        assert_eq!(decode::<i64>(b"-3", FLAG_TEXT), Ok(-3));
        assert_eq!(decode::<f64>(b"0.5", FLAG_TEXT), Ok(0.5));
        assert_eq!(decode::<f64>(b"1e+16", FLAG_TEXT), Ok(1e16));
        // An integer's own flags keep reading leniently.
        assert_eq!(decode::<u64>(b" 42 ", FLAG_INT), Ok(42));
        // A text whose meaning the number would change: a version, a padded figure, forms
        // `str` never writes (an outside audit: `'3.10'` read as 3.1).
        for text in [
            "3.10", "7.000", "2.50", "1e05", "1E5", ".5", "5.", "1.0e3", "1e16", "-0", "0.10",
            "Infinity", "+1.5", "1_000",
        ] {
            let e = decode::<f64>(text.as_bytes(), FLAG_TEXT).unwrap_err();
            assert!(e.0.contains("read it as a String"), "{text}: {e}");
        }
        let e = decode::<i64>(b"-0", FLAG_TEXT).unwrap_err();
        assert!(e.0.contains("read it as a String"), "{e}");
        for (text, f) in [
            ("2.5", 2.5),
            ("100.0", 100.0),
            ("100", 100.0),
            ("-3", -3.0),
            ("1e-05", 1e-5),
            ("-0.0", -0.0),
            ("inf", f64::INFINITY),
        ] {
            assert_eq!(decode::<f64>(text.as_bytes(), FLAG_TEXT), Ok(f), "{text}");
        }
    }

    /// Python's `repr` of floats, as Python 3 writes them (`python3 -c 'print(repr(x))'`).
    #[test]
    fn floats_are_spelled_as_python_spells_them() {
        for (f, python) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (2.5, "2.5"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (1e-05, "1e-05"),
            (1000000000000000.0, "1000000000000000.0"),
            (1e+16, "1e+16"),
            (1.2345678901234568e+17, "1.2345678901234568e+17"),
            (1.5e+300, "1.5e+300"),
            (5e-324, "5e-324"),
            (1.7976931348623157e+308, "1.7976931348623157e+308"),
            (-3.25, "-3.25"),
            (0.30000000000000004, "0.30000000000000004"),
            (0.3333333333333333, "0.3333333333333333"),
            (12345.678, "12345.678"),
            (0.00030000000000000003, "0.00030000000000000003"),
            (1e+22, "1e+22"),
            (9007199254740992.0, "9007199254740992.0"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ] {
            assert_eq!(plain::python_float_repr(f), python);
        }
    }

    /// An integer read as text has no `decr` padding, as Python and the CLI read it; a float
    /// too small for an `f32` is no zero (outside audit findings).
    #[test]
    fn integers_read_as_text_unpadded_and_floats_keep_their_value() {
        assert_eq!(decode::<String>(b"99 ", FLAG_INT), Ok("99".to_string()));
        assert_eq!(decode::<String>(b"99", FLAG_INT), Ok("99".to_string()));
        assert_eq!(decode::<String>(b"99 ", FLAG_TEXT), Ok("99 ".to_string()));
        assert_eq!(decode::<Vec<u8>>(b"ab", FLAG_TEXT), Ok(b"ab".to_vec()));
        let e = decode::<f32>(b"1e-50", FLAG_TEXT).unwrap_err();
        assert!(e.0.contains("too small for an f32"), "{e}");
        let e = decode::<f32>(b"1e+300", FLAG_TEXT).unwrap_err();
        assert!(e.0.contains("beyond an f32"), "{e}");
        assert_eq!(decode::<f32>(b"0.0", FLAG_TEXT), Ok(0.0));
        assert_eq!(decode::<f32>(b"2.5", FLAG_TEXT), Ok(2.5));
        // Python's pickled 1e-50 (protocol 5).
        let hex = "8005950a0000000000000047358dee7a4ad4b81f2e";
        let pickled: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let e = decode::<f32>(&pickled, FLAG_PICKLE).unwrap_err();
        assert!(e.0.contains("too small for an f32"), "{e}");
        assert_eq!(decode::<f64>(&pickled, FLAG_PICKLE), Ok(1e-50));
    }

    /// A bincode value may claim more memory than 32 MiB when its bytes are many: 5,000,000
    /// `u64` zeros are 5 MB of varints and 40 MB in memory (refused before, though newcache
    /// wrote it); a small value claiming gigabytes is still refused.
    #[test]
    fn bincode_reads_back_large_values_and_refuses_huge_claims() {
        let big = vec![0u64; 5_000_000];
        let (bytes, flags) = enc(&big);
        assert_eq!(
            decode::<Vec<u64>>(&bytes, flags).map(|v| v.len()),
            Ok(5_000_000)
        );
        // A string claiming 4 GB in a few bytes.
        let mut lie = Vec::new();
        bincode::serde::encode_into_std_write(u64::from(u32::MAX), &mut lie, bincode_config())
            .unwrap();
        let e = bincode_decode::<String>(&lie).unwrap_err();
        assert!(
            matches!(e, bincode::error::DecodeError::LimitExceeded),
            "{e}"
        );
    }

    /// The CLI shows a compressed value within its cache's `inflate_limit` (an outside
    /// audit: a value the cache read was shown as "does not inflate" past the default).
    #[test]
    fn display_inflates_within_the_limit_it_is_given() {
        let text = "z".repeat(5_000);
        let compressed = deflate(text.as_bytes()).expect("compresses");
        let flags = FLAG_TEXT | FLAG_ZLIB;
        assert!(display_within(&compressed, flags, 1_000).contains("do not inflate"));
        assert_eq!(display_within(&compressed, flags, 10_000), text);
        assert_eq!(display(&compressed, flags), text);
    }

    /// An empty sequence is bytes only when its elements are `u8`: an empty `Vec<String>`
    /// stored as empty bytes read as `b''` in Python, so it goes through the codec (and a
    /// Rust reader gets it back either way).
    #[test]
    fn an_empty_sequence_is_bytes_only_of_u8() {
        assert_eq!(enc(&Vec::<u8>::new()), (Vec::new(), FLAG_BYTES));
        assert_eq!(enc(&[0u8; 0][..]), (Vec::new(), FLAG_BYTES));
        let codec_flag = ValueCodec::Bincode.flag();
        for (bytes, flags) in [
            enc(&Vec::<String>::new()),
            enc(&std::collections::BTreeSet::<i64>::new()),
            enc(&Some(Vec::<u32>::new())),
        ] {
            assert_eq!(flags, codec_flag);
            assert!(
                !bytes.is_empty(),
                "the codec's own encoding of an empty sequence"
            );
        }
        let (bytes, flags) = enc(&Vec::<String>::new());
        assert_eq!(
            decode::<Vec<String>>(&bytes, flags).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            decode::<Vec<u8>>(&[], FLAG_BYTES).unwrap(),
            Vec::<u8>::new()
        );
        // Not empty: a sequence of `u8` is bytes, of anything else goes through the codec.
        assert_eq!(enc(&vec![1u8, 2]), (vec![1, 2], FLAG_BYTES));
        assert_eq!(
            enc(&std::collections::VecDeque::from([1u8, 2])),
            (vec![1, 2], FLAG_BYTES)
        );
        assert_eq!(enc(&vec![1u32, 2]).1, codec_flag);
    }

    /// A set (or heap) of `u8` is not bytes: serde gives it a sequence's form, and stored as
    /// bytes it reached Python as `bytes` (a `HashSet` in hash order) where a set of `i32`
    /// is a list. It goes through the codec, and reads back as the set.
    #[test]
    fn a_set_of_u8_is_not_bytes() {
        use std::collections::{BTreeSet, BinaryHeap, HashSet};
        let codec_flag = ValueCodec::Bincode.flag();
        let set = BTreeSet::from([3u8, 1, 2]);
        let (bytes, flags) = enc(&set);
        assert_eq!(flags, codec_flag);
        assert_eq!(decode::<BTreeSet<u8>>(&bytes, flags).unwrap(), set);
        assert_eq!(enc(&BTreeSet::<u8>::new()).1, codec_flag);
        assert_eq!(enc(&HashSet::from([7u8])).1, codec_flag);
        assert_eq!(enc(&BinaryHeap::from([7u8, 9])).1, codec_flag);
    }

    /// A plain value read as a sequence gives its bytes as `u8`s only: an integer's digits
    /// or a text's bytes as a `Vec<u32>`, `Vec<i64>` or `Vec<String>` are an error, not the
    /// characters' codes.
    #[test]
    fn a_plain_value_read_as_a_sequence_of_non_bytes_is_an_error() {
        assert_eq!(decode::<Vec<u8>>(b"hi", FLAG_TEXT).unwrap(), b"hi".to_vec());
        assert_eq!(decode::<Vec<u8>>(b"5", FLAG_INT).unwrap(), b"5".to_vec());
        assert_eq!(
            decode::<Vec<u8>>(&[0, 255], FLAG_BYTES).unwrap(),
            vec![0, 255]
        );
        let wrong = [
            decode::<Vec<u32>>(b"5", FLAG_INT).map(|v| format!("{v:?}")),
            decode::<Vec<i64>>(b"hi", FLAG_TEXT).map(|v| format!("{v:?}")),
            decode::<Vec<String>>(b"5", FLAG_INT).map(|v| format!("{v:?}")),
            decode::<Vec<u16>>(&[0, 255], FLAG_BYTES).map(|v| format!("{v:?}")),
        ];
        for read in wrong {
            let err = read.unwrap_err().to_string();
            assert!(err.contains("Vec<u8>") && !err.contains("53"), "{err}");
        }
    }

    #[test]
    fn plain_values_use_python_clients_flags() {
        assert_eq!(enc("héllo"), ("héllo".as_bytes().to_vec(), FLAG_TEXT));
        assert_eq!(enc(&String::from("x")), (b"x".to_vec(), FLAG_TEXT));
        assert_eq!(enc(&'é'), ("é".as_bytes().to_vec(), FLAG_TEXT));
        assert_eq!(enc(&42u64), (b"42".to_vec(), FLAG_INT));
        assert_eq!(enc(&-7i32), (b"-7".to_vec(), FLAG_INT));
        assert_eq!(
            enc(&u128::MAX),
            (u128::MAX.to_string().into_bytes(), FLAG_INT)
        );
        // Booleans are pickled: Python reads True, not pylibmc's 1.
        assert_eq!(enc(&true), (b"\x80\x02\x88.".to_vec(), FLAG_PICKLE));
        assert_eq!(enc(&false), (b"\x80\x02\x89.".to_vec(), FLAG_PICKLE));
        assert_eq!(
            enc(&vec![0u8, 13, 10, 255]),
            (vec![0, 13, 10, 255], FLAG_BYTES)
        );
        assert_eq!(enc(&b"raw"[..]), (b"raw".to_vec(), FLAG_BYTES));
        assert_eq!(enc(&Some("x")), (b"x".to_vec(), FLAG_TEXT));
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Game {
        name: String,
        players: Vec<u32>,
        score: f64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct UserId(u64);

    #[cfg(feature = "bincode")]
    #[test]
    fn other_values_are_bincode_and_round_trip() {
        let game = Game {
            name: "chess".into(),
            players: vec![1, 2],
            score: 0.5,
        };
        let (bytes, flags) = enc(&game);
        assert_eq!(flags, FLAG_TEXT | FLAG_BINCODE);
        assert_eq!(
            bytes[0], UNREADABLE,
            "invalid UTF-8 first: Python's clients raise"
        );
        assert_eq!(decode::<Game>(&bytes, flags).unwrap(), game);
        // Written before the marker: the codec's bit alone, no 0xff.
        assert_eq!(decode::<Game>(&bytes[1..], FLAG_BINCODE).unwrap(), game);
        // The marker promised and missing is an error, not a misread.
        assert!(decode::<Game>(&bytes[1..], flags).is_err());

        let map: std::collections::BTreeMap<String, i32> = [("a".into(), 1)].into();
        let (bytes, flags) = enc(&map);
        assert_eq!(flags, FLAG_TEXT | FLAG_BINCODE);
        assert_eq!(
            decode::<std::collections::BTreeMap<String, i32>>(&bytes, flags).unwrap(),
            map
        );

        for v in [None, Some(2.5f64)] {
            let (bytes, flags) = enc(&v);
            assert_eq!(flags, FLAG_TEXT | FLAG_BINCODE);
            assert_eq!(decode::<Option<f64>>(&bytes, flags).unwrap(), v);
        }
        // A Vec of something other than u8 is not bytes.
        let (bytes, flags) = enc(&vec![1u16, 2]);
        assert_eq!(flags, FLAG_TEXT | FLAG_BINCODE);
        assert_eq!(decode::<Vec<u16>>(&bytes, flags).unwrap(), vec![1, 2]);
        let (bytes, flags) = enc(&vec!["a", "b"]);
        assert_eq!(flags, FLAG_TEXT | FLAG_BINCODE);
        assert_eq!(
            decode::<Vec<String>>(&bytes, flags).unwrap(),
            vec!["a", "b"]
        );
    }

    #[test]
    fn plain_values_round_trip() {
        let (b, f) = enc("ключ");
        assert_eq!(decode::<String>(&b, f).unwrap(), "ключ");
        let (b, f) = enc(&-12345i64);
        assert_eq!(decode::<i64>(&b, f).unwrap(), -12345);
        let (b, f) = enc(&true);
        assert!(decode::<bool>(&b, f).unwrap());
        let (b, f) = enc(&vec![1u8, 2, 3]);
        assert_eq!(decode::<Vec<u8>>(&b, f).unwrap(), vec![1, 2, 3]);
        let (b, f) = enc(&UserId(9));
        assert_eq!(f, FLAG_INT);
        assert_eq!(decode::<UserId>(&b, f).unwrap(), UserId(9));
        let (b, f) = enc(&Some(5u8));
        assert_eq!(decode::<Option<u8>>(&b, f).unwrap(), Some(5));
    }

    #[test]
    fn values_written_by_python_are_read() {
        // pylibmc: int 4, bool 2, str 16, bytes 0; pymemcache: int 2.
        assert_eq!(decode::<i64>(b"17", FLAG_INT).unwrap(), 17);
        assert_eq!(
            decode::<u64>(b"18446744073709551615", FLAG_INT).unwrap(),
            u64::MAX
        );
        assert!(decode::<bool>(b"1", FLAG_BOOL).unwrap());
        assert_eq!(decode::<i32>(b"12", FLAG_BOOL).unwrap(), 12);
        assert_eq!(decode::<String>(b"hi", FLAG_TEXT).unwrap(), "hi");
        assert_eq!(decode::<String>(b"hi", FLAG_BYTES).unwrap(), "hi");
        assert_eq!(
            decode::<Vec<u8>>(b"\xff\x00", FLAG_BYTES).unwrap(),
            vec![255, 0]
        );
        // After decr, old memcached versions leave trailing spaces.
        assert_eq!(decode::<u32>(b"9 ", FLAG_INT).unwrap(), 9);
    }

    #[test]
    fn unreadable_values_are_typed_errors() {
        let err = decode::<String>(b"\x80\x04", FLAG_PICKLE).unwrap_err();
        assert!(err.0.contains("pickle"), "{err}");
        assert!(decode::<String>(b"x", FLAG_TEXT | FLAG_ZLIB)
            .unwrap_err()
            .0
            .contains("zlib"));
        assert!(decode::<String>(b"x", FLAG_PICKLE | FLAG_TEXT).is_err());
        // Another application's bits are ignored, as Python's clients ignore them.
        assert_eq!(decode::<String>(b"x", 0x4000).unwrap(), "x");
        assert_eq!(decode::<String>(b"x", FLAG_TEXT | 1 << 20).unwrap(), "x");
        assert_eq!(decode::<u32>(b"7", FLAG_INT | 1 << 31).unwrap(), 7);
        assert_eq!(decode::<String>(b"x", FLAG_TEXT | 1 << 8).unwrap(), "x");
        // Bits 5-7 are not ignored: PHP's compressed text (0x30) is no text.
        assert!(decode::<Vec<u8>>(b"x", FLAG_TEXT | 0x20).is_err());
        assert!(decode::<u8>(b"300", FLAG_INT)
            .unwrap_err()
            .0
            .contains("\"300\" is not a valid u8"));
        // A value that is no number is not shown: decode errors end up in logs.
        let err = decode::<u32>(b"token=sk_live_1", FLAG_TEXT).unwrap_err().0;
        assert!(!err.contains("sk_live") && err.contains("15-byte"), "{err}");
        assert!(decode::<i32>(b"abc", FLAG_INT).is_err());
        assert!(decode::<String>(b"\xff", FLAG_TEXT).is_err());
        assert!(decode::<bool>(b"2", FLAG_BOOL).is_err());
        // A Python str or bytes that reads "True" is no bool (an outside audit).
        for (bytes, flags) in [
            (&b"True"[..], FLAG_TEXT),
            (b"1", FLAG_TEXT),
            (b"1", FLAG_BYTES),
        ] {
            let err = decode::<bool>(bytes, flags).unwrap_err();
            assert!(err.0.contains("not a bool"), "{err}");
        }
        assert!(decode::<bool>(b"1", FLAG_INT).unwrap());
        assert!(decode::<Game>(b"\x01", FLAG_BINCODE).is_err());
        // Trailing bytes mean the wrong type.
        #[cfg(feature = "bincode")]
        {
            let (b, f) = enc(&(1u32, 2u32));
            assert!(decode::<u32>(&b, f).is_err());
        }
    }

    #[cfg(feature = "bincode")]
    #[test]
    fn encoding_appends_after_existing_bytes() {
        let mut out = b"HEADER".to_vec();
        let flags = encode(&vec![1u16], &mut out, ValueCodec::Bincode).unwrap();
        assert_eq!(flags, FLAG_TEXT | FLAG_BINCODE);
        assert!(out.starts_with(b"HEADER"));
        assert_eq!(decode::<Vec<u16>>(&out[6..], flags).unwrap(), vec![1]);
    }

    #[test]
    fn display_shows_text_and_describes_the_rest() {
        assert_eq!(display(b"42", FLAG_INT), "42");
        assert_eq!(display(b"hi", FLAG_TEXT), "hi");
        assert_eq!(display(b"\xff", FLAG_BYTES), "b'\\xff'");
        assert!(display(b"ab", FLAG_BINCODE).starts_with("<a bincode value of 2 bytes"));
        assert_eq!(display(b"\xff[1,2]", FLAG_TEXT | FLAG_JSON), "[1,2]");
        assert_eq!(display(b"\x80\x02\x88.", FLAG_PICKLE), "True");
        let zipped = deflate(&b"hello ".repeat(20)).unwrap();
        assert_eq!(display(&zipped, FLAG_TEXT | FLAG_ZLIB), "hello ".repeat(20));
    }

    #[test]
    fn compressed_values_inflate_within_the_limit() {
        let text = "compressible ".repeat(1000);
        let zipped = deflate(text.as_bytes()).unwrap();
        assert!(zipped.len() < text.len() / 10);
        assert_eq!(
            decode::<String>(&zipped, FLAG_TEXT | FLAG_ZLIB).unwrap(),
            text
        );
        assert_eq!(
            decode_bounded::<String>(zipped.clone(), 0, FLAG_TEXT | FLAG_ZLIB, text.len()).unwrap(),
            text
        );
        // One byte over the limit is an error, before the rest is inflated.
        let err =
            decode_bounded::<String>(zipped, 0, FLAG_TEXT | FLAG_ZLIB, text.len() - 1).unwrap_err();
        assert!(err.0.contains("inflate limit"), "{err}");
        // A bomb: 100 MB of zeros in about 100 KB, against the default 32 MiB limit.
        let bomb = deflate(&vec![0u8; 100 << 20]).unwrap();
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        assert!(decode::<Vec<u8>>(&bomb, FLAG_ZLIB).is_err());
        // A pickle of 33 million empty lists: 32 KB compressed, 33 MB inflated (under the
        // inflate limit), and 5.46 GB to read before the scan counted values as it met them
        // (an outside audit). Refused, with what to do instead.
        let mut lists = vec![0x80, 5, b']', b'('];
        lists.resize(lists.len() + 33_000_000, b']');
        lists.extend_from_slice(b"e.");
        let bomb = deflate(&lists).unwrap();
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let err = decode::<Vec<Vec<u8>>>(&bomb, FLAG_PICKLE | FLAG_ZLIB).unwrap_err();
        assert!(err.0.contains("more values than newcache reads"), "{err}");
        assert!(err.0.contains("get_raw"), "{err}");
        // Incompressible bytes are not stored compressed.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(deflate(&noise).is_none());
        // pylibmc's compressed int and pickle (flags 4|8, 1|8).
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut zlib, b"123456789012").unwrap();
        let zipped = zlib.finish().unwrap();
        assert_eq!(
            decode::<u64>(&zipped, FLAG_INT | FLAG_ZLIB).unwrap(),
            123456789012
        );
    }

    #[test]
    fn python_ints_and_bools_read_from_every_clients_flags() {
        // pylibmc: int 4, bool 2 ("1"); pymemcache and python-memcached: int 2, bool pickled.
        assert_eq!(decode::<i64>(b"-5", FLAG_BOOL).unwrap(), -5);
        assert_eq!(
            decode::<u128>(b"1000000000000000000000000000000", FLAG_BOOL).unwrap(),
            10u128.pow(30)
        );
        assert!(decode::<bool>(b"1", FLAG_BOOL).unwrap());
        assert!(!decode::<bool>(b"\x80\x05\x89.", FLAG_PICKLE).unwrap());
        // python-memcached pickles with protocol 0: True is `I01`.
        assert!(decode::<bool>(b"I01\n.", FLAG_PICKLE).unwrap());
        assert!(!decode::<bool>(b"I00\n.", FLAG_PICKLE).unwrap());
        assert_eq!(decode::<i64>(b"42", FLAG_INT).unwrap(), 42);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_values_round_trip_and_plain_values_stay_plain() {
        let game = Game {
            name: "chess".into(),
            players: vec![1, 2],
            score: 0.5,
        };
        let mut out = Vec::new();
        let flags = encode(&game, &mut out, ValueCodec::Json).unwrap();
        assert_eq!(flags, FLAG_TEXT | FLAG_JSON);
        assert_eq!(out.remove(0), UNREADABLE);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"name":"chess","players":[1,2],"score":0.5}"#
        );
        out.insert(0, UNREADABLE);
        assert_eq!(decode::<Game>(&out, flags).unwrap(), game);
        // Plain values keep Python's flags whatever the codec.
        let mut out = Vec::new();
        assert_eq!(encode("hi", &mut out, ValueCodec::Json).unwrap(), FLAG_TEXT);
        // Reads go by the flags: a bincode value is read by a JSON-writing cache.
        #[cfg(feature = "bincode")]
        {
            let (b, f) = enc(&game);
            assert_eq!(decode::<Game>(&b, f).unwrap(), game);
        }
        assert!(decode::<Game>(b"{", FLAG_JSON)
            .unwrap_err()
            .0
            .contains("json"));
    }

    #[cfg(not(feature = "json"))]
    #[test]
    fn a_codec_that_is_not_compiled_in_is_a_typed_error_naming_its_feature() {
        assert!(!ValueCodec::Json.compiled_in());
        let err = decode::<Vec<u16>>(b"[1]", FLAG_JSON).unwrap_err();
        assert!(err.0.contains("`json` feature"), "{err}");
        let err = encode(&vec![1u16], &mut Vec::new(), ValueCodec::Json).unwrap_err();
        assert!(err.0.contains("`json` feature"), "{err}");
    }

    #[test]
    fn decoding_a_buffer_hands_it_over_as_the_string() {
        let mut value = b"<13 envelope>hello".to_vec();
        value.reserve(64);
        let ptr = value.as_ptr();
        let s: String = decode_vec(value, 13, FLAG_TEXT).unwrap();
        assert_eq!(s, "hello");
        assert_eq!(s.as_ptr(), ptr, "the String is the buffer, not a copy");
        // Everything decode reads, decode_vec reads the same way.
        let opt: Option<String> = decode_vec(b"xyhi".to_vec(), 2, FLAG_TEXT).unwrap();
        assert_eq!(opt.as_deref(), Some("hi"));
        assert_eq!(
            decode_vec::<u64>(b"__42".to_vec(), 2, FLAG_INT).unwrap(),
            42
        );
        assert!(decode_vec::<bool>(b"1".to_vec(), 0, FLAG_BOOL).unwrap());
        assert_eq!(
            decode_vec::<Vec<u8>>(b"..\x00\xff".to_vec(), 2, FLAG_BYTES).unwrap(),
            vec![0, 255]
        );
        // Text that is not UTF-8 is the same error whichever way it is read.
        let owned = decode_vec::<String>(b"ok\xff".to_vec(), 0, FLAG_TEXT).unwrap_err();
        let borrowed = decode::<String>(b"ok\xff", FLAG_TEXT).unwrap_err();
        assert_eq!(owned.0, borrowed.0);
        assert!(owned.0.starts_with("not UTF-8 text"), "{owned}");
        assert!(decode_vec::<String>(b"ab".to_vec(), 9, FLAG_TEXT)
            .unwrap()
            .is_empty());
        #[cfg(feature = "bincode")]
        {
            let mut out = b"HEADER".to_vec();
            let flags = encode(&vec![1u16, 2], &mut out, ValueCodec::Bincode).unwrap();
            assert_eq!(decode_vec::<Vec<u16>>(out, 6, flags).unwrap(), vec![1, 2]);
        }
    }

    #[cfg(feature = "pickle")]
    #[test]
    fn the_pickle_codec_gives_python_its_own_types() {
        let game = Game {
            name: "chess".into(),
            players: vec![1, 2],
            score: 0.5,
        };
        let mut out = Vec::new();
        let flags = encode(&game, &mut out, ValueCodec::Pickle).unwrap();
        assert_eq!(flags, FLAG_PICKLE);
        assert_eq!(&out[..2], b"\x80\x03");
        assert_eq!(decode::<Game>(&out, flags).unwrap(), game);
        for v in [None, Some(2.5f64)] {
            let mut out = Vec::new();
            let flags = encode(&v, &mut out, ValueCodec::Pickle).unwrap();
            assert_eq!(decode::<Option<f64>>(&out, flags).unwrap(), v);
        }
        // A bincode-writing cache reads pickles, and the other way round.
        let (b, f) = enc(&game);
        assert_eq!(decode::<Game>(&b, f).unwrap(), game);
    }

    #[test]
    fn byte_vectors_move_whole_both_ways() {
        // Encoded with one copy, decoded as the very buffer (no per-byte serde).
        let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let (out, flags) = enc(&bytes);
        assert_eq!((flags, out.len()), (FLAG_BYTES, bytes.len()));
        assert_eq!(out, bytes);
        let (out, flags) = enc(bytes.as_slice());
        assert_eq!((flags, &out), (FLAG_BYTES, &bytes));
        let mut value = b"..".to_vec();
        value.extend_from_slice(&bytes);
        let ptr = value.as_ptr();
        let got: Vec<u8> = decode_vec(value, 2, FLAG_BYTES).unwrap();
        assert_eq!(got, bytes);
        assert_eq!(got.as_ptr(), ptr, "the Vec is the buffer, not a copy");
        // A sequence that is not all u8 is still the codec's.
        assert_eq!(enc(&vec![1u16, 2]).1, FLAG_TEXT | FLAG_BINCODE);
        assert_eq!(enc(&vec![Some(1u8)]).1, FLAG_TEXT | FLAG_BINCODE);
        // Other flags still go through serde.
        assert_eq!(
            decode_vec::<Vec<u8>>(b"ab".to_vec(), 0, FLAG_TEXT).unwrap(),
            b"ab"
        );
    }

    #[test]
    fn strs_and_bytes_are_handed_over_without_a_copy() {
        let text = "x".repeat(100_000);
        let mut buf = Vec::new();
        let (ptr, flags) = with_encoding(text.as_str(), ValueCodec::Bincode, &mut buf, |b, f| {
            (b.as_ptr(), f)
        })
        .unwrap();
        assert_eq!((ptr, flags), (text.as_ptr(), FLAG_TEXT));
        assert!(buf.is_empty(), "no copy made");
        let (ptr, _) = with_encoding(&Some(&text), ValueCodec::Bincode, &mut buf, |b, f| {
            (b.as_ptr(), f)
        })
        .unwrap();
        assert_eq!(ptr, text.as_ptr());
        // Anything else is encoded as encode() does, into the buffer.
        for value in [
            &42i64 as &dyn erased::Value,
            &true,
            &vec![1u8, 2],
            &(1, "x"),
        ] {
            let want = value.encode_plain();
            let got = value.with_encoding(&mut buf);
            assert_eq!(got, want);
        }
    }

    /// `encode` and `with_encoding` of the same value, for the test above.
    mod erased {
        use super::*;
        pub trait Value {
            fn encode_plain(&self) -> (Vec<u8>, u32);
            fn with_encoding(&self, buf: &mut Vec<u8>) -> (Vec<u8>, u32);
        }
        impl<T: Serialize> Value for T {
            fn encode_plain(&self) -> (Vec<u8>, u32) {
                let mut out = Vec::new();
                let flags = encode(self, &mut out, ValueCodec::Bincode).unwrap();
                (out, flags)
            }
            fn with_encoding(&self, buf: &mut Vec<u8>) -> (Vec<u8>, u32) {
                with_encoding(self, ValueCodec::Bincode, buf, |b, f| (b.to_vec(), f)).unwrap()
            }
        }
    }

    #[cfg(feature = "bincode")]
    #[test]
    fn a_bincode_length_past_the_limit_is_an_error_not_an_allocation() {
        // A map whose first key claims 4 GB (found by the value_codec fuzz target: the
        // allocation aborted the process).
        let mut bytes = vec![UNREADABLE, 1, 252];
        bytes.extend_from_slice(&0xfcfc_fcfcu32.to_le_bytes());
        bytes.extend_from_slice(b"abc");
        let err =
            decode::<std::collections::BTreeMap<String, String>>(&bytes, FLAG_TEXT | FLAG_BINCODE)
                .unwrap_err();
        assert!(err.0.contains("bincode"), "{err}");
    }

    #[test]
    fn codec_names_round_trip() {
        for c in [ValueCodec::Bincode, ValueCodec::Json, ValueCodec::Pickle] {
            assert_eq!(ValueCodec::from_name(c.name()), Some(c));
        }
        assert_eq!(ValueCodec::from_name("yaml"), None);
        let expected = if cfg!(feature = "bincode") {
            ValueCodec::Bincode
        } else if cfg!(feature = "json") {
            ValueCodec::Json
        } else if cfg!(feature = "pickle") {
            ValueCodec::Pickle
        } else {
            ValueCodec::Bincode
        };
        assert_eq!(ValueCodec::default(), expected);
    }
}
