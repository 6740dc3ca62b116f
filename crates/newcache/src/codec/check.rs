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
//! newcache's own read (an outside audit).

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

/// The first part of `value` that `format` would store as something else, as a sentence;
/// `None` when every part reads back as written. `json` adds NaN and infinity to
/// `Some(None)`.
pub(super) fn ambiguous<T: Serialize + ?Sized>(value: &T, json: bool) -> Option<String> {
    value
        .serialize(Walk {
            json,
            in_some: false,
            key: false,
        })
        .err()
        .map(|e| e.0)
}

/// One step of the walk: the format's rules, whether this part is the inside of a `Some`,
/// and whether it is (in) a pickled map's key.
#[derive(Clone, Copy)]
struct Walk {
    json: bool,
    in_some: bool,
    key: bool,
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
    /// pickled map's key.
    fn unhashable(self, what: &str) -> Result<Walk, Ambiguous> {
        if self.key {
            return Err(Ambiguous(format!(
                "a map key that is {what} is pickled as a Python list or dict, which cannot be a dict key (Python's unpickler fails, and Django reads a miss); key the map by strings, numbers or tuples of them, or use codec=bincode"
            )));
        }
        Ok(self.inner())
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
        serialize_bytes(&[u8]);
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
        value.serialize(self.unhashable("an enum variant with data")?)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Walk, Ambiguous> {
        self.unhashable("a sequence (a Vec, a slice, a set)")
    }
    fn serialize_tuple(self, _: usize) -> Result<Walk, Ambiguous> {
        Ok(self.inner())
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Walk, Ambiguous> {
        Ok(self.inner())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Walk, Ambiguous> {
        self.unhashable("an enum variant with data")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Walk, Ambiguous> {
        self.unhashable("a map")
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Walk, Ambiguous> {
        self.unhashable("a struct")
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Walk, Ambiguous> {
        self.unhashable("an enum variant with data")
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
    use super::ambiguous;
    use std::collections::BTreeMap;

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
