//! What JSON and pickle cannot hold apart, refused before a value is stored.
//!
//! Both formats have one `null` (`None`) for every "nothing": `Some(None)` (and `Some(())`)
//! is written as `None` and reads back as `None`, so an `Option<Option<T>>` set to
//! `Some(None)` came back as `None`. JSON has no NaN or infinity: serde_json writes them as
//! `null`, so `Some(f64::INFINITY)` came back as `None` and a bare `f64::NAN` was stored and
//! then failed every read. (An outside audit found both; bincode keeps all of them apart,
//! and pickle keeps NaN and infinity.) [`ambiguous`] walks the value once, before it is
//! encoded, and names the first such part. It also refuses, for pickle, a map key that
//! Python cannot hash (a list, a dict: a `Vec`, a set, a map, a struct, an enum variant
//! with data): the pickle would fail Python's unpickler, which Django reads as a miss, and
//! newcache's own read (an outside audit). For JSON it refuses a value that nests deeper
//! than serde_json reads back ([`JSON_MAX_DEPTH`]): such a value was stored, and every read
//! of it failed (an outside audit: a struct nested 200 deep).

use std::fmt;

use serde::ser::{self, Serialize};

/// Why a value cannot be stored as it is: the part of it the format would change.
#[derive(Debug)]
pub(super) struct Ambiguous(pub(super) String);

impl fmt::Display for Ambiguous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Ambiguous {}

impl ser::Error for Ambiguous {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Ambiguous(msg.to_string())
    }
}

/// The deepest containers may nest in a JSON value newcache stores: serde_json's reader
/// refuses the 128th container inside another (its recursion limit), so a deeper value
/// would be stored and then fail every read. A struct, a map, a sequence, a tuple and a
/// byte string are one level each, an enum variant with data one more (`{"Variant": ...}`).
pub(crate) const JSON_MAX_DEPTH: u32 = 127;

/// The first part of `value` that `format` would store as something else, as a sentence;
/// `None` when every part reads back as written. `json` adds NaN and infinity to
/// `Some(None)`, and nesting deeper than [`JSON_MAX_DEPTH`].
pub(super) fn ambiguous<T: Serialize + ?Sized>(value: &T, json: bool) -> Option<String> {
    value
        .serialize(Walk {
            json,
            in_some: false,
            key: false,
            depth: 0,
        })
        .err()
        .map(|e| e.0)
}

/// One step of the walk: the format's rules, whether this part is the inside of a `Some`,
/// whether it is (in) a pickled map's key, and how many containers hold it.
#[derive(Clone, Copy)]
struct Walk {
    json: bool,
    in_some: bool,
    key: bool,
    depth: u32,
}

impl Walk {
    /// The walk of a part inside a container: not directly inside a `Some`.
    fn inner(self) -> Walk {
        Walk {
            in_some: false,
            ..self
        }
    }

    /// A "nothing" (`None`, `()`, a unit struct): refused directly inside a `Some`.
    fn nothing(self, what: &str) -> Result<(), Ambiguous> {
        if self.in_some {
            return Err(Ambiguous(format!(
                "Some({what}) is stored as None and reads back as None; use codec=bincode, or a type that does not nest a nothing in an Option"
            )));
        }
        Ok(())
    }

    /// A part Python stores as a list or a dict, which it cannot hash: refused in a
    /// pickled map's key. It opens `levels` containers (JSON's nesting).
    fn unhashable(self, what: &str, levels: u32) -> Result<Walk, Ambiguous> {
        if self.key {
            return Err(Ambiguous(format!(
                "a map key that is {what} is pickled as a Python list or dict, which cannot be a dict key (Python's unpickler fails, and Django reads a miss); key the map by strings, numbers or tuples of them, or use codec=bincode"
            )));
        }
        self.deeper(levels)
    }

    /// The walk of the parts of a container `levels` deep (one, or two for an enum variant
    /// with data): refused for JSON past [`JSON_MAX_DEPTH`].
    fn deeper(self, levels: u32) -> Result<Walk, Ambiguous> {
        let depth = self.depth.saturating_add(levels);
        if self.json && depth > JSON_MAX_DEPTH {
            return Err(Ambiguous(format!(
                "the value nests containers (structs, maps, sequences, enum variants with data) more than {JSON_MAX_DEPTH} deep, past what serde_json reads back (every read would fail); use codec=bincode (pickle reads no deeper than 128), or a flatter value"
            )));
        }
        Ok(Walk {
            depth,
            ..self.inner()
        })
    }

    /// An `i128` or `u128` inside a value: serde-pickle has no encoding for them (an outside
    /// audit got its "decoding error: i128 is not supported" from a write). A bare one is
    /// stored as a plain integer before any codec sees it.
    fn wide(self) -> Result<(), Ambiguous> {
        if !self.json {
            return Err(Ambiguous(
                "an i128 or u128 inside a value has no pickle encoding in serde-pickle; store it as i64/u64 when it fits, or as a string, or use codec=bincode or codec=json".into(),
            ));
        }
        Ok(())
    }

    fn float(self, v: f64) -> Result<(), Ambiguous> {
        if self.json && !v.is_finite() {
            return Err(Ambiguous(format!(
                "{v} has no JSON form (serde_json would store null, which does not read back as a number); use codec=pickle or codec=bincode, or store a finite number"
            )));
        }
        Ok(())
    }
}

macro_rules! fine {
    ($($method:ident($ty:ty);)*) => {
        $(fn $method(self, _: $ty) -> Result<(), Ambiguous> { Ok(()) })*
    };
}

impl ser::Serializer for Walk {
    type Ok = ();
    type Error = Ambiguous;
    type SerializeSeq = Walk;
    type SerializeTuple = Walk;
    type SerializeTupleStruct = Walk;
    type SerializeTupleVariant = Walk;
    type SerializeMap = Walk;
    type SerializeStruct = Walk;
    type SerializeStructVariant = Walk;

    fine! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_char(char);
        serialize_str(&str);
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Ambiguous> {
        // JSON writes bytes as an array of numbers: a container.
        self.deeper(1).map(drop)
    }
    fn serialize_i128(self, _: i128) -> Result<(), Ambiguous> {
        self.wide()
    }
    fn serialize_u128(self, _: u128) -> Result<(), Ambiguous> {
        self.wide()
    }
    fn serialize_f32(self, v: f32) -> Result<(), Ambiguous> {
        self.float(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Ambiguous> {
        self.float(v)
    }
    fn serialize_none(self) -> Result<(), Ambiguous> {
        self.nothing("None")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Ambiguous> {
        value.serialize(Walk {
            in_some: true,
            ..self
        })
    }
    fn serialize_unit(self) -> Result<(), Ambiguous> {
        self.nothing("()")
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<(), Ambiguous> {
        self.nothing(name)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Ambiguous> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Ambiguous> {
        // A newtype is written as what it holds: `Some(Wrapper(None))` is `Some(None)`.
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Ambiguous> {
        value.serialize(self.unhashable("an enum variant with data", 1)?)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Walk, Ambiguous> {
        self.unhashable("a sequence (a Vec, a slice, a set)", 1)
    }
    fn serialize_tuple(self, _: usize) -> Result<Walk, Ambiguous> {
        self.deeper(1)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Walk, Ambiguous> {
        self.deeper(1)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Walk, Ambiguous> {
        self.unhashable("an enum variant with data", 2)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Walk, Ambiguous> {
        self.unhashable("a map", 1)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Walk, Ambiguous> {
        self.unhashable("a struct", 1)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Walk, Ambiguous> {
        self.unhashable("an enum variant with data", 2)
    }
}

/// A map's keys (for pickle, held to what Python can hash) and values.
impl ser::SerializeMap for Walk {
    type Ok = ();
    type Error = Ambiguous;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Ambiguous> {
        key.serialize(Walk {
            key: !self.json,
            ..self.inner()
        })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Ambiguous> {
        value.serialize(Walk {
            key: false,
            ..self.inner()
        })
    }
    fn end(self) -> Result<(), Ambiguous> {
        Ok(())
    }
}

/// Every element and field of a container: walked as a part on its own.
macro_rules! parts {
    ($($trait:ident { $($method:ident($($arg:ty),*);)* })*) => {
        $(impl ser::$trait for Walk {
            type Ok = ();
            type Error = Ambiguous;
            $(fn $method<T: Serialize + ?Sized>(&mut self, $(_: $arg,)* value: &T) -> Result<(), Ambiguous> {
                value.serialize(self.inner())
            })*
            fn end(self) -> Result<(), Ambiguous> {
                Ok(())
            }
        })*
    };
}

parts! {
    SerializeSeq { serialize_element(); }
    SerializeTuple { serialize_element(); }
    SerializeTupleStruct { serialize_field(); }
    SerializeTupleVariant { serialize_field(); }
    SerializeStruct { serialize_field(&'static str); }
    SerializeStructVariant { serialize_field(&'static str); }
}

#[cfg(test)]
mod tests {
    use super::{ambiguous, JSON_MAX_DEPTH};
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    /// A value nesting containers of each kind: a struct, a sequence, a map, an enum
    /// variant with data (two levels: `{"V": {...}}`), a tuple, bytes at the bottom.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Nest {
        Struct { inner: Box<Nest> },
        Seq(Vec<Nest>),
        Map(BTreeMap<String, Nest>),
        Tuple((u8, Box<Nest>)),
        Bytes(#[serde(with = "serde_bytes_like")] Vec<u8>),
    }

    /// `Vec<u8>` through `serialize_bytes` (what `serde_bytes` does), read back from
    /// serde_json's array of numbers.
    mod serde_bytes_like {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            serde::Deserialize::deserialize(d)
        }
    }

    /// `Nest` values `depth` containers deep, one of each shape at its top: the enum's
    /// object is a level of its own, so each variant takes one level for `{"V": ..}` and
    /// the rest for what it holds.
    fn nests(depth: u32) -> Vec<Nest> {
        fn down(depth: u32, kind: u32) -> Nest {
            // Each variant is 2 levels but `Bytes` (its object, then the array).
            if depth <= 2 {
                return Nest::Bytes(vec![1, 2]);
            }
            let inner = Box::new(down(depth - 2, kind + 1));
            match kind % 4 {
                0 => Nest::Struct { inner },
                1 => Nest::Seq(vec![*inner]),
                2 => Nest::Map(BTreeMap::from([("k".to_string(), *inner)])),
                _ => Nest::Tuple((7, inner)),
            }
        }
        (0..4).map(|kind| down(depth, kind)).collect()
    }

    /// JSON's depth limit is serde_json's own: a value at it is passed and reads back; one
    /// level deeper is refused, and serde_json could not have read it.
    #[test]
    fn json_refuses_what_nests_deeper_than_serde_json_reads() {
        // Even depths only (each variant is two levels); the limit is odd, so the deepest
        // passing value is one under it, plus a plain sequence at exactly the limit.
        for nest in nests(JSON_MAX_DEPTH - 1) {
            assert_eq!(ambiguous(&nest, true), None);
            let text = serde_json::to_string(&nest).unwrap();
            assert_eq!(serde_json::from_str::<Nest>(&text).unwrap(), nest);
        }
        for nest in nests(JSON_MAX_DEPTH + 1) {
            let said = ambiguous(&nest, true).expect("refused");
            assert!(said.contains("more than 127 deep"), "{said}");
            let text = serde_json::to_string(&nest).unwrap();
            let e = serde_json::from_str::<Nest>(&text).unwrap_err();
            assert!(e.to_string().contains("recursion limit"), "{e}");
            // Pickle has its own limit (`pickle::MAX_DEPTH`), checked by its writer.
            assert_eq!(ambiguous(&nest, false), None);
        }
        let seq =
            |depth: u32| (1..depth).fold(serde_json::json!([1]), |v, _| serde_json::json!([v]));
        assert_eq!(ambiguous(&seq(JSON_MAX_DEPTH), true), None);
        let text = seq(JSON_MAX_DEPTH).to_string();
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        assert!(ambiguous(&seq(JSON_MAX_DEPTH + 1), true).is_some());
        let text = seq(JSON_MAX_DEPTH + 1).to_string();
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
    }

    #[test]
    fn some_of_a_nothing_is_named_in_both_formats() {
        for json in [false, true] {
            for found in [
                ambiguous(&Some(None::<i32>), json),
                ambiguous(&vec![Some(Some(1)), Some(None)], json),
                ambiguous(&BTreeMap::from([("a", Some(Some(())))]), json),
                ambiguous(&(1, Some(())), json),
            ] {
                let said = found.expect("refused");
                assert!(said.contains("reads back as None"), "{said}");
            }
        }
    }

    #[test]
    fn what_reads_back_as_written_passes() {
        for json in [false, true] {
            assert_eq!(ambiguous(&None::<Option<i32>>, json), None);
            assert_eq!(ambiguous(&Some(Some(1)), json), None);
            assert_eq!(ambiguous(&vec![None::<i32>, Some(2)], json), None);
            assert_eq!(ambiguous(&Some(vec![None::<i32>]), json), None);
            assert_eq!(ambiguous(&(1.5f64, "x", [1u8, 2]), json), None);
            assert_eq!(
                ambiguous(&Some(BTreeMap::from([(1, None::<i32>)])), json),
                None
            );
        }
        // Pickle keeps NaN and infinity.
        assert_eq!(ambiguous(&f64::NAN, false), None);
        assert_eq!(ambiguous(&Some(f64::INFINITY), false), None);
    }

    #[test]
    fn pickle_refuses_map_keys_python_cannot_hash() {
        use std::collections::BTreeSet;
        #[derive(serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
        struct P {
            a: i32,
        }
        #[derive(serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
        enum E {
            N(i32),
        }
        for found in [
            ambiguous(&BTreeMap::from([(vec![1], 1)]), false),
            ambiguous(&BTreeMap::from([((1, vec![2]), 1)]), false),
            ambiguous(&BTreeMap::from([(P { a: 1 }, 1)]), false),
            ambiguous(&BTreeMap::from([(E::N(1), 1)]), false),
            ambiguous(&BTreeMap::from([(BTreeSet::from([1]), 1)]), false),
            ambiguous(
                &vec![BTreeMap::from([(BTreeMap::from([(1, 2)]), 1)])],
                false,
            ),
        ] {
            let said = found.expect("refused");
            assert!(said.contains("cannot be a dict key"), "{said}");
        }
        // Hashable keys: strings, numbers, tuples of them, unit variants; and lists
        // and dicts as values.
        #[derive(serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
        enum U {
            A,
        }
        assert_eq!(
            ambiguous(&BTreeMap::from([((1, "a"), vec![1])]), false),
            None
        );
        assert_eq!(
            ambiguous(&BTreeMap::from([(U::A, P { a: 1 })]), false),
            None
        );
        assert_eq!(ambiguous(&BTreeMap::from([(Some(1), 1)]), false), None);
    }

    #[test]
    fn pickle_refuses_wide_integers_inside_values_and_json_takes_them() {
        let said = ambiguous(&vec![i128::MAX], false).expect("refused");
        assert!(said.contains("i128 or u128"), "{said}");
        assert!(ambiguous(&(1u8, u128::MAX), false).is_some());
        assert_eq!(ambiguous(&vec![i128::MAX], true), None);
    }

    #[test]
    fn json_refuses_what_it_cannot_write() {
        for found in [
            ambiguous(&f64::NAN, true),
            ambiguous(&Some(f64::INFINITY), true),
            ambiguous(&vec![1.0f32, f32::NEG_INFINITY], true),
            ambiguous(&BTreeMap::from([("x", f64::NAN)]), true),
        ] {
            let said = found.expect("refused");
            assert!(said.contains("no JSON form"), "{said}");
        }
    }
}
