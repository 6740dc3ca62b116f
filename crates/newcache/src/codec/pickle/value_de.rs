//! serde's view of a decoded pickle (`serde_pickle::Value`), stricter than serde-pickle's
//! own deserializer in the two places where that one is silently wrong or needlessly
//! refuses:
//!
//! - a sequence is read to its end: a Python list or tuple of three read as a Rust pair or
//!   `[T; 2]` is an error ("invalid length"), where serde-pickle returned its first two;
//! - an integer outside `i64` reaches the visitor as `u64`, `i128` or `u128`, whichever
//!   holds it: serde-pickle refused every one ("integer too large"), so `u64::MAX`, which the
//!   `pickle` codec writes, did not read back.
//!
//! Dicts are read to their end too, and Python's `bytes` read as a `Vec<u8>`, never as a
//! `String` or `char`: `{'a': 1, b'a': 2}` read as a `HashMap<String, i64>` lost an entry,
//! the two keys made one (an outside audit); Python keeps `str` and `bytes` apart, and so
//! does this. A float that overflows the `f32` asked for is an error, not infinity.
//! Enums read as serde-pickle writes them: a unit variant
//! as its name, the others as `{name: value}` (or a `(name, value)` tuple, serde-pickle's
//! compatible form).

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde_pickle::Value;

use super::err;
use crate::codec::plain::FromF64;
use crate::codec::CodecError;

/// A decoded pickle value, as a serde `Deserializer`.
pub(super) struct ValueDe(pub(super) Value);

impl<'de> IntoDeserializer<'de, CodecError> for ValueDe {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// Visits `items` as a sequence that must be read to its end.
fn seq<'de, V: Visitor<'de>>(
    items: impl IntoIterator<Item = Value>,
    visitor: V,
) -> Result<V::Value, CodecError> {
    let mut de = SeqDeserializer::new(items.into_iter().map(ValueDe));
    let value = visitor.visit_seq(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Visits bytes as a sequence of `u8` that must be read to its end.
fn seq_of_bytes<'de, V: Visitor<'de>>(bytes: Vec<u8>, visitor: V) -> Result<V::Value, CodecError> {
    let mut de = SeqDeserializer::<_, CodecError>::new(bytes.into_iter());
    let value = visitor.visit_seq(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Visits a dict's entries as a map that must be read to its end.
fn map<'de, V: Visitor<'de>>(
    entries: impl IntoIterator<Item = (serde_pickle::HashableValue, Value)>,
    visitor: V,
) -> Result<V::Value, CodecError> {
    let entries = entries
        .into_iter()
        .map(|(k, v)| (ValueDe(k.into_value()), ValueDe(v)));
    let mut de = MapDeserializer::new(entries);
    let value = visitor.visit_map(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Visits an integer outside `i64` (Python's ints have no bound) as the narrowest of `u64`,
/// `i128` and `u128` that holds it.
fn big_int<'de, V: Visitor<'de>>(digits: &str, visitor: V) -> Result<V::Value, CodecError> {
    if let Ok(i) = digits.parse::<i64>() {
        visitor.visit_i64(i)
    } else if let Ok(u) = digits.parse::<u64>() {
        visitor.visit_u64(u)
    } else if let Ok(i) = digits.parse::<i128>() {
        visitor.visit_i128(i)
    } else if let Ok(u) = digits.parse::<u128>() {
        visitor.visit_u128(u)
    } else {
        Err(err(format!(
            "pickle: an integer of {} digits has no Rust integer type (over 128 bits)",
            digits.trim_start_matches('-').len()
        )))
    }
}

impl<'de> de::Deserializer<'de> for ValueDe {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.0 {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::I64(i) => visitor.visit_i64(i),
            Value::Int(big) => big_int(&big.to_string(), visitor),
            Value::F64(f) => visitor.visit_f64(f),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::String(s) => visitor.visit_string(s),
            Value::List(v) | Value::Tuple(v) => seq(v, visitor),
            Value::Set(v) | Value::FrozenSet(v) => {
                seq(v.into_iter().map(|h| h.into_value()), visitor)
            }
            Value::Dict(m) => map(m, visitor),
        }
    }

    /// A sequence; Python's `bytes` too, byte by byte, so that a `Vec<u8>` (or `[u8; N]`)
    /// reads them (serde's `Vec<u8>` asks for a sequence, where serde-pickle offers bytes).
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.0 {
            Value::Bytes(b) => seq_of_bytes(b, visitor),
            other => ValueDe(other).deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.0 {
            Value::None => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        let (variant, args) = match self.0 {
            Value::String(name) => (Value::String(name), None),
            Value::Dict(m) if m.len() == 1 => match m.into_iter().next() {
                Some((name, args)) => (name.into_value(), Some(args)),
                None => return Err(err("pickle: an empty dict read as an enum")),
            },
            Value::Tuple(v) if (1..=2).contains(&v.len()) => {
                let mut v = v.into_iter();
                match v.next() {
                    Some(name) => (name, v.next()),
                    None => return Err(err("pickle: an empty tuple read as an enum")),
                }
            }
            _ => {
                return Err(err(
                    "pickle: an enum is a variant's name, a {name: value} dict or a (name, value) tuple",
                ))
            }
        };
        visitor.visit_enum(EnumDe { variant, args })
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.0 {
            Value::Bytes(_) => Err(not_text("a str")),
            other => ValueDe(other).deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.0 {
            Value::Bytes(_) => Err(not_text("a char")),
            other => ValueDe(other).deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.0 {
            // `as f32` of a finite f64 beyond f32's range is infinity, of one below its
            // least zero.
            Value::F64(f) => match <f32 as FromF64>::from_f64(f) {
                Ok(g) => visitor.visit_f32(g),
                Err(why) => Err(err(format!("pickle: the float {f:e} is {why}"))),
            },
            other => ValueDe(other).deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f64 bytes byte_buf
        unit unit_struct tuple_struct map struct identifier ignored_any
    }
}

/// The error for Python `bytes` read where text is asked for.
fn not_text(what: &str) -> CodecError {
    err(format!(
        "pickle: Python bytes where {what} is asked for (Python keeps bytes and str apart); read bytes as a Vec<u8>"
    ))
}

/// An enum's variant name and, for all but unit variants, its value.
struct EnumDe {
    variant: Value,
    args: Option<Value>,
}

impl<'de> de::EnumAccess<'de> for EnumDe {
    type Error = CodecError;
    type Variant = VariantDe;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, VariantDe), CodecError> {
        let variant = seed.deserialize(ValueDe(self.variant))?;
        Ok((variant, VariantDe(self.args)))
    }
}

/// An enum variant's value.
struct VariantDe(Option<Value>);

impl VariantDe {
    fn value(self, what: &str) -> Result<Value, CodecError> {
        self.0
            .ok_or_else(|| err(format!("pickle: a {what} variant without its value")))
    }
}

impl<'de> de::VariantAccess<'de> for VariantDe {
    type Error = CodecError;

    fn unit_variant(self) -> Result<(), CodecError> {
        match self.0 {
            None | Some(Value::None) => Ok(()),
            Some(_) => Err(err("pickle: a unit variant with a value")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, CodecError> {
        seed.deserialize(ValueDe(self.value("newtype")?))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        match self.value("tuple")? {
            Value::List(v) | Value::Tuple(v) => seq(v, visitor),
            _ => Err(err("pickle: a tuple variant's value is not a list")),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        match self.value("struct")? {
            Value::Dict(m) => map(m, visitor),
            _ => Err(err("pickle: a struct variant's value is not a dict")),
        }
    }
}
