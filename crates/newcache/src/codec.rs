//! The value codec: any serde type to item bytes and flags, and back.
//!
//! Plain values are stored the way Python's memcached clients store them, so a Django app
//! beside a Rust service reads them as its own (flags measured with pylibmc 1.6.3 on Python 3;
//! pymemcache agrees on all but bool):
//!
//! | value | bytes on the server | flags |
//! |---|---|---|
//! | `Vec<u8>`, `&[u8]`, `serde_bytes` | the bytes | 0 ([`FLAG_BYTES`]) |
//! | `String`, `&str`, `char` | UTF-8 | 16 ([`FLAG_TEXT`]) |
//! | integers (`i8`..`u128`) | decimal ASCII, so `incr`/`decr` work | 4 ([`FLAG_INT`]) |
//! | `bool` | `1` / `0` | 2 ([`FLAG_BOOL`]) |
//! | anything else (structs, maps, floats, `None`...) | the cache's [`ValueCodec`]: bincode 2 (default) or JSON | 0x200 ([`FLAG_BINCODE`]) or 0x400 ([`FLAG_JSON`]) |
//!
//! Newtype wrappers and `Some(x)` are stored as their content. Values Python pickled
//! ([`FLAG_PICKLE`]) or compressed ([`FLAG_ZLIB`]) are reported as typed errors: Rust cannot
//! read a pickle.
//!
//! The codec for structured values is picked per cache (`codec=bincode|json` in the URL,
//! [`Builder::codec`](crate::Builder::codec)) among those the Cargo features compile in:
//! `bincode` (default; compact and fast) and `json` (readable by any language, e.g. a
//! Python app with `json.loads`). Reads go by the item's flags, not the cache's choice, so a
//! cache that writes JSON still reads bincode values (when both are compiled in), and a
//! value whose codec is not compiled in is a typed error naming the feature.

use std::fmt;
use std::io::Write as _;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::ser::{self, Impossible, Serialize};

/// Raw bytes (Python `bytes`).
pub const FLAG_BYTES: u32 = 0;
/// A Python pickle (written by Python clients; not readable here).
pub const FLAG_PICKLE: u32 = 1;
/// A boolean as `1`/`0` (pylibmc); pymemcache uses 2 for `int`.
pub const FLAG_BOOL: u32 = 2;
/// An integer as decimal ASCII (pylibmc's int, pymemcache's long).
pub const FLAG_INT: u32 = 4;
/// zlib-compressed, ORed into the others (Python clients, only when smaller).
pub const FLAG_ZLIB: u32 = 8;
/// UTF-8 text (Python `str`).
pub const FLAG_TEXT: u32 = 16;
/// newcache's bincode encoding of any other serde value (bit 9; bit 8 is the herd envelope).
pub const FLAG_BINCODE: u32 = 1 << 9;
/// newcache's JSON encoding of any other serde value (bit 10).
pub const FLAG_JSON: u32 = 1 << 10;

/// How values that are not plain (structs, maps, sequences, floats, `None`...) are
/// serialized. Each codec is compiled in by the Cargo feature of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueCodec {
    /// bincode 2's standard configuration (feature `bincode`, the default): compact and fast,
    /// read only by bincode with the same types.
    Bincode,
    /// JSON through serde_json (feature `json`): larger and slower, read by any language.
    Json,
}

impl Default for ValueCodec {
    /// bincode when compiled in, else JSON.
    fn default() -> Self {
        if cfg!(feature = "bincode") || !cfg!(feature = "json") {
            ValueCodec::Bincode
        } else {
            ValueCodec::Json
        }
    }
}

impl ValueCodec {
    /// The codec of a URL's `codec=` value.
    pub fn from_name(name: &str) -> Option<ValueCodec> {
        match name {
            "bincode" => Some(ValueCodec::Bincode),
            "json" => Some(ValueCodec::Json),
            _ => None,
        }
    }

    /// Its name, as the URL and the Cargo feature spell it.
    pub fn name(self) -> &'static str {
        match self {
            ValueCodec::Bincode => "bincode",
            ValueCodec::Json => "json",
        }
    }

    /// True when this build of newcache has the codec (its Cargo feature is on).
    pub fn compiled_in(self) -> bool {
        match self {
            ValueCodec::Bincode => cfg!(feature = "bincode"),
            ValueCodec::Json => cfg!(feature = "json"),
        }
    }

    /// The flag bit marking values this codec wrote.
    pub fn flag(self) -> u32 {
        match self {
            ValueCodec::Bincode => FLAG_BINCODE,
            ValueCodec::Json => FLAG_JSON,
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
                bincode::serde::encode_into_std_write(value, out, bincode_config())
                    .map(drop)
                    .map_err(|e| CodecError(format!("bincode: {e}")))
            }
            #[cfg(feature = "json")]
            ValueCodec::Json => {
                serde_json::to_writer(out, value).map_err(|e| CodecError(format!("json: {e}")))
            }
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
                let (value, used) = bincode::serde::decode_from_slice(bytes, bincode_config())
                    .map_err(|e| CodecError(format!("bincode: {e}")))?;
                if used != bytes.len() {
                    return Err(CodecError(format!(
                        "bincode value used {used} of {} bytes; was it written as another type?",
                        bytes.len()
                    )));
                }
                Ok(value)
            }
            #[cfg(feature = "json")]
            ValueCodec::Json => {
                serde_json::from_slice(bytes).map_err(|e| CodecError(format!("json: {e}")))
            }
            #[allow(unreachable_patterns)]
            _ => {
                let _ = bytes;
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
}

#[cfg(feature = "bincode")]
fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
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

/// Decodes item bytes stored with `flags` (herd bit already removed) as a `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], flags: u32) -> Result<T, CodecError> {
    match plain_kind(flags)? {
        Kind::Codec(codec) => codec.decode(bytes),
        Kind::Plain(kind) => T::deserialize(PlainDe {
            bytes: Bytes::Borrowed(bytes),
            kind,
        }),
    }
}

/// Like [`decode`] for the bytes of `value` from `offset` on, taking the buffer over: a
/// `String` or `Vec<u8>` is the buffer itself (its first `offset` bytes removed in place),
/// not a copy, so reading a text or bytes value allocates nothing beyond what the transport
/// read.
pub fn decode_vec<T: DeserializeOwned>(
    mut value: Vec<u8>,
    offset: usize,
    flags: u32,
) -> Result<T, CodecError> {
    match plain_kind(flags)? {
        Kind::Codec(codec) => codec.decode(value.get(offset..).unwrap_or_default()),
        Kind::Plain(kind) => {
            value.drain(..offset.min(value.len()));
            T::deserialize(PlainDe {
                bytes: Bytes::Owned(value),
                kind,
            })
        }
    }
}

/// How a value with these flags is decoded.
enum Kind {
    Codec(ValueCodec),
    Plain(Plain),
}

fn plain_kind(flags: u32) -> Result<Kind, CodecError> {
    for codec in [ValueCodec::Bincode, ValueCodec::Json] {
        if flags & codec.flag() != 0 {
            return Ok(Kind::Codec(codec));
        }
    }
    Ok(Kind::Plain(match flags {
        FLAG_BYTES => Plain::Bytes,
        FLAG_TEXT => Plain::Text,
        FLAG_INT => Plain::Int,
        FLAG_BOOL => Plain::Bool,
        f if f & FLAG_ZLIB != 0 => {
            return Err(CodecError(format!(
                "flags {f:#x}: zlib-compressed by a Python client; newcache does not decompress yet"
            )))
        }
        f if f & FLAG_PICKLE != 0 => {
            return Err(CodecError(format!(
                "flags {f:#x}: a Python pickle; store plain str/bytes/int/bool from Python to share values with Rust"
            )))
        }
        f => {
            return Err(CodecError(format!(
                "flags {f:#x} are not a value encoding newcache knows"
            )))
        }
    }))
}

/// Renders a stored value for people (the CLI): text, integers and booleans as they are,
/// anything else as a description.
pub fn display(bytes: &[u8], flags: u32) -> String {
    match flags {
        FLAG_TEXT | FLAG_INT | FLAG_BOOL => String::from_utf8_lossy(bytes).into_owned(),
        FLAG_BYTES => match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => format!("<{} bytes of binary data>", bytes.len()),
        },
        f if f & FLAG_BINCODE != 0 => format!("<bincode value, {} bytes>", bytes.len()),
        f if f & FLAG_JSON != 0 => String::from_utf8_lossy(bytes).into_owned(),
        f => format!("<{} bytes with flags {f:#x}>", bytes.len()),
    }
}

// ---- encoding: a serializer that succeeds only for plain values ----

#[derive(Debug)]
struct NotPlain;

impl fmt::Display for NotPlain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a plain value")
    }
}

impl std::error::Error for NotPlain {}

impl ser::Error for NotPlain {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NotPlain
    }
}

struct Probe<'a> {
    out: &'a mut Vec<u8>,
}

impl Probe<'_> {
    fn int(self, v: impl fmt::Display) -> Result<u32, NotPlain> {
        write!(self.out, "{v}").map_err(|_| NotPlain)?;
        Ok(FLAG_INT)
    }
}

macro_rules! not_plain {
    ($($method:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ret, NotPlain> { Err(NotPlain) })*
    };
}

impl<'a> ser::Serializer for Probe<'a> {
    type Ok = u32;
    type Error = NotPlain;
    type SerializeSeq = ByteSeq<'a>;
    type SerializeTuple = Impossible<u32, NotPlain>;
    type SerializeTupleStruct = Impossible<u32, NotPlain>;
    type SerializeTupleVariant = Impossible<u32, NotPlain>;
    type SerializeMap = Impossible<u32, NotPlain>;
    type SerializeStruct = Impossible<u32, NotPlain>;
    type SerializeStructVariant = Impossible<u32, NotPlain>;

    fn serialize_bool(self, v: bool) -> Result<u32, NotPlain> {
        self.out.push(if v { b'1' } else { b'0' });
        Ok(FLAG_BOOL)
    }
    fn serialize_i8(self, v: i8) -> Result<u32, NotPlain> {
        self.int(v)
    }
    fn serialize_i16(self, v: i16) -> Result<u32, NotPlain> {
        self.int(v)
    }
    fn serialize_i32(self, v: i32) -> Result<u32, NotPlain> {
        self.int(v)
    }
    fn serialize_i64(self, v: i64) -> Result<u32, NotPlain> {
        self.int(v)
    }
    fn serialize_i128(self, v: i128) -> Result<u32, NotPlain> {
        self.int(v)
    }
    fn serialize_u8(self, v: u8) -> Result<u32, NotPlain> {
        self.int(v)
    }
    fn serialize_u16(self, v: u16) -> Result<u32, NotPlain> {
        self.int(v)
    }
    fn serialize_u32(self, v: u32) -> Result<u32, NotPlain> {
        self.int(v)
    }
    fn serialize_u64(self, v: u64) -> Result<u32, NotPlain> {
        self.int(v)
    }
    fn serialize_u128(self, v: u128) -> Result<u32, NotPlain> {
        self.int(v)
    }
    fn serialize_char(self, v: char) -> Result<u32, NotPlain> {
        let mut buf = [0u8; 4];
        self.out
            .extend_from_slice(v.encode_utf8(&mut buf).as_bytes());
        Ok(FLAG_TEXT)
    }
    fn serialize_str(self, v: &str) -> Result<u32, NotPlain> {
        self.out.extend_from_slice(v.as_bytes());
        Ok(FLAG_TEXT)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<u32, NotPlain> {
        self.out.extend_from_slice(v);
        Ok(FLAG_BYTES)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<u32, NotPlain> {
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<u32, NotPlain> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u32, NotPlain> {
        Err(NotPlain)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<ByteSeq<'a>, NotPlain> {
        Ok(ByteSeq { out: self.out })
    }
    not_plain! {
        serialize_f32(f32) -> u32;
        serialize_f64(f64) -> u32;
        serialize_none() -> u32;
        serialize_unit() -> u32;
        serialize_unit_struct(&'static str) -> u32;
        serialize_unit_variant(&'static str, u32, &'static str) -> u32;
        serialize_tuple(usize) -> Impossible<u32, NotPlain>;
        serialize_tuple_struct(&'static str, usize) -> Impossible<u32, NotPlain>;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Impossible<u32, NotPlain>;
        serialize_map(Option<usize>) -> Impossible<u32, NotPlain>;
        serialize_struct(&'static str, usize) -> Impossible<u32, NotPlain>;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Impossible<u32, NotPlain>;
    }
}

/// A sequence is plain only when every element is a `u8` (a `Vec<u8>` or `&[u8]`).
struct ByteSeq<'a> {
    out: &'a mut Vec<u8>,
}

impl ser::SerializeSeq for ByteSeq<'_> {
    type Ok = u32;
    type Error = NotPlain;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), NotPlain> {
        let byte = value.serialize(OnlyU8)?;
        self.out.push(byte);
        Ok(())
    }

    fn end(self) -> Result<u32, NotPlain> {
        Ok(FLAG_BYTES)
    }
}

struct OnlyU8;

impl ser::Serializer for OnlyU8 {
    type Ok = u8;
    type Error = NotPlain;
    type SerializeSeq = Impossible<u8, NotPlain>;
    type SerializeTuple = Impossible<u8, NotPlain>;
    type SerializeTupleStruct = Impossible<u8, NotPlain>;
    type SerializeTupleVariant = Impossible<u8, NotPlain>;
    type SerializeMap = Impossible<u8, NotPlain>;
    type SerializeStruct = Impossible<u8, NotPlain>;
    type SerializeStructVariant = Impossible<u8, NotPlain>;

    fn serialize_u8(self, v: u8) -> Result<u8, NotPlain> {
        Ok(v)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<u8, NotPlain> {
        Err(NotPlain)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotPlain> {
        Err(NotPlain)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotPlain> {
        Err(NotPlain)
    }
    not_plain! {
        serialize_bool(bool) -> u8;
        serialize_i8(i8) -> u8;
        serialize_i16(i16) -> u8;
        serialize_i32(i32) -> u8;
        serialize_i64(i64) -> u8;
        serialize_u16(u16) -> u8;
        serialize_u32(u32) -> u8;
        serialize_u64(u64) -> u8;
        serialize_f32(f32) -> u8;
        serialize_f64(f64) -> u8;
        serialize_char(char) -> u8;
        serialize_str(&str) -> u8;
        serialize_bytes(&[u8]) -> u8;
        serialize_none() -> u8;
        serialize_unit() -> u8;
        serialize_unit_struct(&'static str) -> u8;
        serialize_unit_variant(&'static str, u32, &'static str) -> u8;
        serialize_seq(Option<usize>) -> Impossible<u8, NotPlain>;
        serialize_tuple(usize) -> Impossible<u8, NotPlain>;
        serialize_tuple_struct(&'static str, usize) -> Impossible<u8, NotPlain>;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Impossible<u8, NotPlain>;
        serialize_map(Option<usize>) -> Impossible<u8, NotPlain>;
        serialize_struct(&'static str, usize) -> Impossible<u8, NotPlain>;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Impossible<u8, NotPlain>;
    }
}

// ---- decoding: a deserializer over plain bytes, guided by the flags ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plain {
    Bytes,
    Text,
    Int,
    Bool,
}

/// A plain value's bytes: borrowed from the caller, or an owned buffer to hand over.
enum Bytes<'de> {
    Borrowed(&'de [u8]),
    Owned(Vec<u8>),
}

struct PlainDe<'de> {
    bytes: Bytes<'de>,
    kind: Plain,
}

fn utf8(bytes: &[u8]) -> Result<&str, CodecError> {
    std::str::from_utf8(bytes).map_err(|e| CodecError(format!("not UTF-8 text: {e}")))
}

impl<'de> PlainDe<'de> {
    fn slice(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Borrowed(b) => b,
            Bytes::Owned(v) => v,
        }
    }

    /// The value as a decimal number's text (incr/decr may leave trailing spaces).
    fn number(&self) -> Result<&str, CodecError> {
        Ok(utf8(self.slice())?.trim_matches(|c: char| c.is_ascii_whitespace()))
    }

    fn boolean(&self) -> Result<bool, CodecError> {
        match self.number()? {
            "1" | "True" | "true" => Ok(true),
            "0" | "False" | "false" => Ok(false),
            other => Err(CodecError(format!("{other:?} is not a boolean"))),
        }
    }

    fn parse<N: std::str::FromStr>(&self, what: &str) -> Result<N, CodecError> {
        let s = self.number()?;
        s.parse()
            .map_err(|_| CodecError(format!("{s:?} is not a valid {what}")))
    }

    /// Hands the value to `visitor` as text: borrowed, or the owned buffer itself.
    fn visit_text<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.bytes {
            Bytes::Borrowed(b) => visitor.visit_borrowed_str(utf8(b)?),
            Bytes::Owned(v) => visitor.visit_string(
                String::from_utf8(v).map_err(|e| CodecError(format!("not UTF-8 text: {e}")))?,
            ),
        }
    }

    /// Hands the value to `visitor` as bytes: borrowed, or the owned buffer itself.
    fn visit_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.bytes {
            Bytes::Borrowed(b) => visitor.visit_borrowed_bytes(b),
            Bytes::Owned(v) => visitor.visit_byte_buf(v),
        }
    }
}

macro_rules! parse_number {
    ($($method:ident => $visit:ident($ty:ty);)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
            visitor.$visit(self.parse::<$ty>(stringify!($ty))?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for PlainDe<'de> {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.kind {
            Plain::Bytes => self.visit_bytes(visitor),
            Plain::Text => self.visit_text(visitor),
            Plain::Bool => match self.boolean() {
                Ok(b) => visitor.visit_bool(b),
                Err(_) => visitor.visit_i64(self.parse("integer")?),
            },
            Plain::Int => match self.parse::<i64>("integer") {
                Ok(n) => visitor.visit_i64(n),
                Err(_) => match self.parse::<u64>("integer") {
                    Ok(n) => visitor.visit_u64(n),
                    Err(_) => visitor.visit_i128(self.parse("integer")?),
                },
            },
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_bool(self.boolean()?)
    }

    parse_number! {
        deserialize_i8 => visit_i8(i8);
        deserialize_i16 => visit_i16(i16);
        deserialize_i32 => visit_i32(i32);
        deserialize_i64 => visit_i64(i64);
        deserialize_i128 => visit_i128(i128);
        deserialize_u8 => visit_u8(u8);
        deserialize_u16 => visit_u16(u16);
        deserialize_u32 => visit_u32(u32);
        deserialize_u64 => visit_u64(u64);
        deserialize_u128 => visit_u128(u128);
        deserialize_f32 => visit_f32(f32);
        deserialize_f64 => visit_f64(f64);
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.visit_text(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.visit_text(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.visit_text(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.visit_bytes(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.visit_bytes(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.bytes {
            Bytes::Borrowed(b) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(b.iter().copied()))
            }
            Bytes::Owned(v) => visitor.visit_seq(de::value::SeqDeserializer::new(v.into_iter())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        unit unit_struct tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    fn enc<T: Serialize + ?Sized>(v: &T) -> (Vec<u8>, u32) {
        let mut out = Vec::new();
        let flags = encode(v, &mut out, ValueCodec::Bincode).unwrap();
        (out, flags)
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
        assert_eq!(enc(&true), (b"1".to_vec(), FLAG_BOOL));
        assert_eq!(enc(&false), (b"0".to_vec(), FLAG_BOOL));
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
        assert_eq!(flags, FLAG_BINCODE);
        assert_eq!(decode::<Game>(&bytes, flags).unwrap(), game);

        let map: std::collections::BTreeMap<String, i32> = [("a".into(), 1)].into();
        let (bytes, flags) = enc(&map);
        assert_eq!(flags, FLAG_BINCODE);
        assert_eq!(
            decode::<std::collections::BTreeMap<String, i32>>(&bytes, flags).unwrap(),
            map
        );

        for v in [None, Some(2.5f64)] {
            let (bytes, flags) = enc(&v);
            assert_eq!(flags, FLAG_BINCODE);
            assert_eq!(decode::<Option<f64>>(&bytes, flags).unwrap(), v);
        }
        // A Vec of something other than u8 is not bytes.
        let (bytes, flags) = enc(&vec![1u16, 2]);
        assert_eq!(flags, FLAG_BINCODE);
        assert_eq!(decode::<Vec<u16>>(&bytes, flags).unwrap(), vec![1, 2]);
        let (bytes, flags) = enc(&vec!["a", "b"]);
        assert_eq!(flags, FLAG_BINCODE);
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
        assert!(decode::<String>(b"x", 0x4000).is_err());
        assert!(decode::<u8>(b"300", FLAG_INT).is_err());
        assert!(decode::<i32>(b"abc", FLAG_INT).is_err());
        assert!(decode::<String>(b"\xff", FLAG_TEXT).is_err());
        assert!(decode::<bool>(b"2", FLAG_BOOL).is_err());
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
        assert_eq!(flags, FLAG_BINCODE);
        assert!(out.starts_with(b"HEADER"));
        assert_eq!(decode::<Vec<u16>>(&out[6..], flags).unwrap(), vec![1]);
    }

    #[test]
    fn display_shows_text_and_describes_the_rest() {
        assert_eq!(display(b"42", FLAG_INT), "42");
        assert_eq!(display(b"hi", FLAG_TEXT), "hi");
        assert_eq!(display(b"\xff", FLAG_BYTES), "<1 bytes of binary data>");
        assert_eq!(display(b"ab", FLAG_BINCODE), "<bincode value, 2 bytes>");
        assert_eq!(display(b"[1,2]", FLAG_JSON), "[1,2]");
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
        assert_eq!(flags, FLAG_JSON);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"name":"chess","players":[1,2],"score":0.5}"#
        );
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
        assert!(decode_vec::<String>(b"\xff".to_vec(), 0, FLAG_TEXT).is_err());
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

    #[test]
    fn codec_names_round_trip() {
        for c in [ValueCodec::Bincode, ValueCodec::Json] {
            assert_eq!(ValueCodec::from_name(c.name()), Some(c));
        }
        assert_eq!(ValueCodec::from_name("pickle"), None);
        let expected = if cfg!(feature = "bincode") || !cfg!(feature = "json") {
            ValueCodec::Bincode
        } else {
            ValueCodec::Json
        };
        assert_eq!(ValueCodec::default(), expected);
    }
}
