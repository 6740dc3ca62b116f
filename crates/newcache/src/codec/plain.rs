//! Plain values: the serializer that recognises them (strings, integers, booleans, bytes)
//! and writes them as Python's clients do, and the deserializer that reads them back by
//! their flags.

use std::fmt;
use std::io::Write as _;

use serde::de::{self, Visitor};
use serde::ser::{self, Impossible, Serialize};

use super::{CodecError, FLAG_BYTES, FLAG_INT, FLAG_PICKLE, FLAG_TEXT};

/// `pickle.dumps(True, 2)`.
pub(super) const PICKLED_TRUE: &[u8] = b"\x80\x02\x88.";
/// `pickle.dumps(False, 2)`.
pub(super) const PICKLED_FALSE: &[u8] = b"\x80\x02\x89.";

/// The boolean a pickle holds when it is just `True` or `False` (any protocol from 2 on).
pub(super) fn pickled_bool(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [0x80, 2..=5, 0x88, b'.'] => Some(true),
        [0x80, 2..=5, 0x89, b'.'] => Some(false),
        _ => None,
    }
}

/// A pickled `True` or `False` ([`pickled_bool`]) as a deserializer: a bool, also inside an
/// `Option` or a newtype (serde's `BoolDeserializer` gives `Option<bool>` and `struct
/// On(bool)` a bare bool, which they refuse: an outside audit found `Some(false)` written and
/// never read back).
pub(super) struct PickledBool(pub(super) bool);

impl<'de> de::Deserializer<'de> for PickledBool {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_bool(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// A plain value in an error message: shown when it looks like a number or a boolean (up
/// to 24 characters of digits, signs, points, exponents and spaces, or a boolean's word),
/// else only its length. A decode error is logged where values must not be: an outside
/// audit found a cached token in one ("ssn=... token=sk_live_..." is not a valid u32).
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let numeric = s.len() <= 24
            && s.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E' | ' '));
        let word = matches!(s, "True" | "False" | "true" | "false");
        if numeric || word {
            write!(f, "{s:?}")
        } else {
            write!(f, "a {}-byte value (not shown)", s.len())
        }
    }
}

// ---- encoding: a serializer that succeeds only for plain values ----

/// The value is not plain: it goes through the cache's codec.
#[derive(Debug)]
pub(super) struct NotPlain;

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

/// Serializes a plain value as Python's clients store it, returning its flags; fails with
/// [`NotPlain`] for anything else.
pub(super) struct Probe<'a> {
    pub(super) out: &'a mut Vec<u8>,
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
        // The pickle of True/False: every Python client reads it as a bool (pylibmc's own
        // flag 2 "1" comes back as the int 1).
        self.out
            .extend_from_slice(if v { PICKLED_TRUE } else { PICKLED_FALSE });
        Ok(FLAG_PICKLE)
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
    fn serialize_seq(self, len: Option<usize>) -> Result<ByteSeq<'a>, NotPlain> {
        // A byte vector comes one element at a time: make room for all of it at once.
        self.out.reserve(len.unwrap_or(0));
        Ok(ByteSeq {
            out: self.out,
            elements: 0,
        })
    }
    /// `Vec<u8>` and `[u8]` serialize through here: the bytes go in with one `extend`
    /// (as fast as a copy, where element by element took 57 µs per 100 KB); a sequence of
    /// anything but `u8` is not plain.
    fn collect_seq<I>(self, iter: I) -> Result<u32, NotPlain>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        if is_unordered::<I>() {
            return Err(NotPlain);
        }
        let start = self.out.len();
        let mut plain = true;
        // `map`, not `map_while`: a slice iterator's exact length lets `extend` reserve once
        // and copy without a capacity check per byte.
        self.out
            .extend(iter.into_iter().map(|x| match x.serialize(OnlyU8) {
                Ok(b) => b,
                Err(NotPlain) => {
                    plain = false;
                    0
                }
            }));
        // An empty sequence has no element to ask: it is bytes only when its elements are
        // `u8` by type, else (an empty `Vec<String>`) it goes through the codec, so that
        // Python reads `[]`, or raises, where empty bytes would read as `b''`.
        if self.out.len() == start && !is_u8::<I::Item>() {
            plain = false;
        }
        if plain {
            Ok(FLAG_BYTES)
        } else {
            self.out.truncate(start);
            Err(NotPlain)
        }
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

/// Whether `T` is `u8` (or a reference to one), by its type's name: `type_name` needs no
/// `'static`, which a serializer's element types do not have. Only an empty sequence asks,
/// and a name that ever read otherwise would send an empty byte vector through the codec,
/// where Rust still reads it back as one.
fn is_u8<T: ?Sized>() -> bool {
    std::any::type_name::<T>().trim_start_matches('&') == "u8"
}

/// Whether a sequence that serializes through `collect_seq` as `I` is a set or a heap
/// (`BTreeSet<u8>`, `HashSet<u8>`, `BinaryHeap<u8>`), by its type's name: serde gives sets
/// the form of sequences, so a set of `u8` stored as bytes reached Python as `bytes` (a
/// `HashSet`'s in hash order) where a set of any other number reads as a list (an outside
/// audit). It goes through the codec instead, as a set of `i32` does.
fn is_unordered<I: ?Sized>() -> bool {
    let name = std::any::type_name::<I>();
    name.contains("Set<") || name.contains("BinaryHeap<")
}

/// A sequence is plain only when every element is a `u8` (a `Vec<u8>` or `&[u8]`), and
/// not empty (the elements' type is unknown then: it goes through the codec).
pub(super) struct ByteSeq<'a> {
    out: &'a mut Vec<u8>,
    elements: usize,
}

impl ser::SerializeSeq for ByteSeq<'_> {
    type Ok = u32;
    type Error = NotPlain;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), NotPlain> {
        let byte = value.serialize(OnlyU8)?;
        self.out.push(byte);
        self.elements += 1;
        Ok(())
    }

    fn end(self) -> Result<u32, NotPlain> {
        if self.elements == 0 {
            return Err(NotPlain);
        }
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

/// How a plain value's bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plain {
    /// Flag 0.
    Bytes,
    /// Flag 16, UTF-8.
    Text,
    /// Flag 4, decimal.
    Int,
    /// Flag 2: pylibmc's bool (`1`/`0`), pymemcache's and python-memcached's int.
    IntOrBool,
}

/// A plain value's bytes: borrowed from the caller, or an owned buffer to hand over.
pub(super) enum Bytes<'de> {
    /// Borrowed from the caller.
    Borrowed(&'de [u8]),
    /// A buffer to hand over.
    Owned(Vec<u8>),
}

/// Deserializes a plain value's bytes as its flags say.
pub(super) struct PlainDe<'de> {
    pub(super) bytes: Bytes<'de>,
    pub(super) kind: Plain,
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
        let text = utf8(self.slice())?;
        Ok(match self.kind {
            // A text's leading space is its own, not memcached's.
            Plain::Text | Plain::Bytes => text.trim_end_matches(|c: char| c.is_ascii_whitespace()),
            Plain::Int | Plain::IntOrBool => text.trim_matches(|c: char| c.is_ascii_whitespace()),
        })
    }

    fn boolean(&self) -> Result<bool, CodecError> {
        match self.number()? {
            "1" | "True" | "true" => Ok(true),
            "0" | "False" | "false" => Ok(false),
            other => Err(CodecError(format!("{} is not a boolean", Shown(other)))),
        }
    }

    /// Whether the value is a Python `str` or `bytes` (flags 16 and 0), not a number's flags.
    fn is_text(&self) -> bool {
        matches!(self.kind, Plain::Text | Plain::Bytes)
    }

    /// The error for a text that is not a number as Python's `str` writes one.
    fn not_a_python_number(&self, s: &str, what: &str) -> CodecError {
        CodecError(format!(
            "{} is text that is not a {what} as Python writes one (a sign, a leading zero, a trailing zero, an exponent or a space would be lost); read it as a String",
            Shown(s)
        ))
    }

    /// An integer. A text (a Python `str`, the CLI's values, a counter) reads as one only
    /// when it is spelled as `str(n)` writes it: `'02134'` (a zip code) read as 2134, `'+5'`
    /// as 5, `'-0'` as 0, lost what made them text (outside audits).
    fn parse<N: std::str::FromStr + std::fmt::Display>(&self, what: &str) -> Result<N, CodecError> {
        let s = self.number()?;
        let parsed = s.parse::<N>().ok();
        if self.is_text() && parsed.as_ref().is_none_or(|n| n.to_string() != s) {
            return Err(self.not_a_python_number(s, what));
        }
        parsed.ok_or_else(|| CodecError(format!("{} is not a valid {what}", Shown(s))))
    }

    /// A float. A text reads as one only when spelled as Python's `str` writes a float
    /// (`repr`: `2.5`, `100.0`, `1e+16`) or an integer (`100`): `'3.10'` (a version) read as
    /// 3.1, `'1e05'` as 100000.0 (an outside audit). A finite number beyond the type's
    /// range, or one too small for it that is not zero, is an error, where converting makes
    /// it an infinity or zero (Python's `1e300` or `1e-50` read as an `f32`: outside audits).
    fn parse_float<F: FromF64>(&self, what: &str) -> Result<F, CodecError> {
        let s = self.number()?;
        let parsed = s.parse::<f64>().ok();
        if self.is_text() && parsed.is_none_or(|f| python_float_repr(f) != s && !is_python_int(s)) {
            return Err(self.not_a_python_number(s, what));
        }
        let f = parsed.ok_or_else(|| CodecError(format!("{} is not a valid {what}", Shown(s))))?;
        let unsigned = s.trim_start_matches(['+', '-']);
        let spelled_infinite = unsigned
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("inf"));
        if f.is_infinite() && !spelled_infinite {
            return Err(CodecError(format!(
                "{} is beyond an {what}'s range",
                Shown(s)
            )));
        }
        F::from_f64(f).map_err(|e| CodecError(format!("{}: {e}", Shown(s))))
    }

    /// Hands the value to `visitor` as text: borrowed, or the owned buffer itself. An
    /// integer's text without the spaces `decr` pads it with (`"99 "` is the number 99,
    /// as Python and the CLI read it).
    fn visit_text<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        if !self.is_text() {
            let number = self.number()?;
            if number.len() != self.slice().len() {
                return visitor.visit_string(number.to_owned());
            }
        }
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

/// Whether `s` is an integer as Python's `str` writes one: digits, no zero before another
/// digit, a `-` before any but zero (`0`, `-3`, `100` are; `02134`, `+5`, `-0`, ` 4` are not).
fn is_python_int(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    !unsigned.is_empty()
        && unsigned.bytes().all(|b| b.is_ascii_digit())
        && (unsigned == "0" || !unsigned.starts_with('0'))
        && !(unsigned == "0" && s.starts_with('-'))
}

/// `f` as Python's `repr` (and `str`) writes a float: the shortest digits that read back as
/// `f`, in positional form with at least one digit after the point while the decimal
/// point's position is within -4 and 16 (`0.0001`, `100.0`, `1e+16`, `1e-05`, `1.5e+300`),
/// `inf`, `-inf`, `nan`.
pub(super) fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` gives the same shortest digits: `d.ddde<exp>`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    // The point's position after the first `point` digits.
    let point = exp + 1;
    let body = if (-3..=16).contains(&point) {
        let len = i32::try_from(digits.len()).unwrap_or(i32::MAX);
        if point <= 0 {
            let zeros = "0".repeat(usize::try_from(-point).unwrap_or(0));
            format!("0.{zeros}{digits}")
        } else if point >= len {
            let zeros = "0".repeat(usize::try_from(point - len).unwrap_or(0));
            format!("{digits}{zeros}.0")
        } else {
            let (int, frac) = digits.split_at(usize::try_from(point).unwrap_or(0));
            format!("{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{first}{rest}e{exp_sign}{:02}", exp.unsigned_abs())
    };
    format!("{sign}{body}")
}

/// A float type read from an `f64`: `None`'s place taken by why it cannot be.
pub(super) trait FromF64: Sized {
    /// `f` as this type: an error when a finite `f` would be infinite, or a non-zero one
    /// zero.
    fn from_f64(f: f64) -> Result<Self, String>;
}

impl FromF64 for f64 {
    fn from_f64(f: f64) -> Result<f64, String> {
        Ok(f)
    }
}

impl FromF64 for f32 {
    fn from_f64(f: f64) -> Result<f32, String> {
        // `as` rounds to the nearest f32: infinity past its range, zero below its least.
        #[allow(clippy::cast_possible_truncation)]
        let g = f as f32;
        if f.is_finite() && g.is_infinite() {
            Err("beyond an f32's range; read it as an f64".into())
        } else if f != 0.0 && g == 0.0 {
            Err("too small for an f32, which would read it as zero; read it as an f64".into())
        } else {
            Ok(g)
        }
    }
}

/// One byte of a plain value read as a sequence: a `u8` and nothing else, so that an
/// integer's digits or a text's bytes read as a `Vec<u32>` or `Vec<String>` are an error,
/// not the digits' character codes.
struct ByteDe(u8);

impl<'de> de::IntoDeserializer<'de, CodecError> for ByteDe {
    type Deserializer = ByteDe;

    fn into_deserializer(self) -> ByteDe {
        self
    }
}

impl<'de> de::Deserializer<'de> for ByteDe {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, CodecError> {
        Err(CodecError(
            "a plain value (text, an integer or bytes) read as a sequence of something other than bytes: read it as its own type, or as a Vec<u8> for its bytes"
                .into(),
        ))
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_u8(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
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
            // Flag 2 is pymemcache's and python-memcached's integer (and Django's over
            // them), pylibmc's bool: every Python client reads it as an integer (pylibmc's
            // `1` is a `True` equal to it), so a self-describing type (a JSON `Value`, an
            // untagged enum) gets the number, not `true` (an outside audit).
            // Integers past `i64` too: pymemcache's 2**63 read as "not a boolean" (an
            // outside audit).
            Plain::Int | Plain::IntOrBool => match self.parse::<i64>("integer") {
                Ok(n) => visitor.visit_i64(n),
                Err(_) => match self.parse::<u64>("integer") {
                    Ok(n) => visitor.visit_u64(n),
                    Err(_) => match (self.parse::<i128>("integer"), self.kind) {
                        (Ok(n), _) => visitor.visit_i128(n),
                        (Err(_), Plain::IntOrBool) if self.boolean().is_ok() => {
                            visitor.visit_bool(self.boolean()?)
                        }
                        (Err(e), _) => Err(e),
                    },
                },
            },
        }
    }

    /// A bool from an integer's flags only (pylibmc's bool is flag 2, `1`/`0`): text or
    /// bytes that read `True` or `1` are a Python `str` or `bytes`, and reading them as a
    /// bool is an error, as reading a pickled `str` as one is.
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.kind {
            Plain::Int | Plain::IntOrBool => visitor.visit_bool(self.boolean()?),
            Plain::Text | Plain::Bytes => Err(CodecError(format!(
                "a Python {} ({}), not a bool; read it as a String",
                if self.kind == Plain::Text {
                    "str"
                } else {
                    "bytes"
                },
                Shown(&String::from_utf8_lossy(self.slice()))
            ))),
        }
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
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_f32(self.parse_float::<f32>("f32")?)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        visitor.visit_f64(self.parse_float::<f64>("f64")?)
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

    /// A sequence of the value's bytes, each of which reads only as a `u8` ([`ByteDe`]).
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        let mut seq = de::value::SeqDeserializer::new(self.slice().iter().map(|&b| ByteDe(b)));
        let value = visitor.visit_seq(&mut seq)?;
        seq.end()?;
        Ok(value)
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

/// Hands a `str` or byte slice value to a closure as the caller's own bytes, with its flags,
/// without copying them; anything else is [`NotPlain`] here (and encoded into a buffer by
/// the caller instead).
pub(super) struct Direct<'a, F, R> {
    pub(super) f: &'a mut Option<F>,
    pub(super) out: &'a mut Option<R>,
}

impl<F: FnOnce(&[u8], u32) -> R, R> Direct<'_, F, R> {
    fn give(self, bytes: &[u8], flags: u32) -> Result<(), NotPlain> {
        let f = self.f.take().ok_or(NotPlain)?;
        *self.out = Some(f(bytes, flags));
        Ok(())
    }
}

impl<F: FnOnce(&[u8], u32) -> R, R> ser::Serializer for Direct<'_, F, R> {
    type Ok = ();
    type Error = NotPlain;
    type SerializeSeq = Impossible<(), NotPlain>;
    type SerializeTuple = Impossible<(), NotPlain>;
    type SerializeTupleStruct = Impossible<(), NotPlain>;
    type SerializeTupleVariant = Impossible<(), NotPlain>;
    type SerializeMap = Impossible<(), NotPlain>;
    type SerializeStruct = Impossible<(), NotPlain>;
    type SerializeStructVariant = Impossible<(), NotPlain>;

    fn serialize_str(self, v: &str) -> Result<(), NotPlain> {
        self.give(v.as_bytes(), FLAG_TEXT)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), NotPlain> {
        self.give(v, FLAG_BYTES)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), NotPlain> {
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), NotPlain> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), NotPlain> {
        Err(NotPlain)
    }
    not_plain! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_i128(i128) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_u128(u128) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Impossible<(), NotPlain>;
        serialize_tuple(usize) -> Impossible<(), NotPlain>;
        serialize_tuple_struct(&'static str, usize) -> Impossible<(), NotPlain>;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Impossible<(), NotPlain>;
        serialize_map(Option<usize>) -> Impossible<(), NotPlain>;
        serialize_struct(&'static str, usize) -> Impossible<(), NotPlain>;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Impossible<(), NotPlain>;
    }
}
