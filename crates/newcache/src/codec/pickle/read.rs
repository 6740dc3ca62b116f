//! Reading a pickle into a serde value ([`decode`]), after the scan has checked it;
//! django-newcache's herd tuple reads as its value.

use serde::de::{Deserialize, DeserializeOwned, IgnoredAny};

use super::scan::scan;
use super::value_de::ValueDe;
use crate::codec::CodecError;

pub(super) fn options() -> serde_pickle::DeOptions {
    // Keeps the Marker's (empty) constructor arguments instead of a placeholder; the scan
    // refused every other object.
    serde_pickle::DeOptions::new().keep_restore_state()
}

/// Decodes a pickle as a `T`; a django-newcache herd tuple decodes as its value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if let Some(b) = crate::codec::plain::pickled_bool(bytes) {
        // newcache's own booleans: no need for the general path.
        return T::deserialize(crate::codec::plain::PickledBool(b));
    }
    let scanned = scan(bytes)?;
    let value =
        ValueDe(serde_pickle::value_from_slice(bytes, options()).map_err(|e| scanned.why(e))?);
    match scanned.marker {
        None => T::deserialize(value),
        Some(_) => <(IgnoredAny, T, IgnoredAny)>::deserialize(value).map(|(_, value, _)| value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::pickle::tests::hex;
    use std::collections::HashMap;

    #[test]
    fn python_pickles_decode_as_serde_values() {
        // pickle.dumps(x, 5) for 2.5, None, True, [1, 'a'], b'\x00', {1, 2}
        assert_eq!(
            decode::<f64>(&hex("8005950a000000000000004740040000000000002e")).unwrap(),
            2.5
        );
        assert_eq!(decode::<Option<i32>>(b"\x80\x05N.").unwrap(), None);
        assert!(decode::<bool>(b"\x80\x05\x88.").unwrap());
        assert!(decode::<bool>(crate::codec::plain::PICKLED_TRUE).unwrap());
        assert!(!decode::<bool>(crate::codec::plain::PICKLED_FALSE).unwrap());
        // python-memcached's protocol 0: {'a': 1}
        let d: HashMap<String, i64> = decode(b"(dp0\nVa\np1\nI1\ns.").unwrap();
        assert_eq!(d["a"], 1);
    }

    #[test]
    fn a_sequence_is_read_to_its_end() {
        // pickle.dumps([1, 2, 3], 5) and pickle.dumps((1, 'a', 'b'), 5)
        let list = hex("8005950b000000000000005d94284b014b024b03652e");
        let tuple = hex("8005950d000000000000004b018c0161948c01629487942e");
        assert_eq!(decode::<Vec<i64>>(&list).unwrap(), [1, 2, 3]);
        assert_eq!(decode::<[i64; 3]>(&list).unwrap(), [1, 2, 3]);
        for e in [
            decode::<[i64; 2]>(&list).unwrap_err(),
            decode::<(i64, i64)>(&list).unwrap_err(),
            decode::<(i64, String)>(&tuple).unwrap_err(),
        ] {
            assert!(e.0.contains("invalid length 3"), "{e}");
        }
        let (n, a, b): (i64, String, String) = decode(&tuple).unwrap();
        assert_eq!((n, a.as_str(), b.as_str()), (1, "a", "b"));
    }

    #[test]
    fn python_bytes_read_as_vec_u8_also_inside_containers() {
        // pickle.dumps(b'\x00\xff', 5) and pickle.dumps({'a': b'\x00\xff'}, 5)
        let bytes = hex("8005950600000000000000430200ff942e");
        assert_eq!(decode::<Vec<u8>>(&bytes).unwrap(), [0, 255]);
        assert_eq!(decode::<[u8; 2]>(&bytes).unwrap(), [0, 255]);
        assert!(decode::<[u8; 1]>(&bytes).is_err(), "read to the end");
        let dict = hex("8005950d000000000000007d948c016194430200ff94732e");
        let d: HashMap<String, Vec<u8>> = decode(&dict).unwrap();
        assert_eq!(d["a"], [0, 255]);
    }

    fn pickled<T: serde::Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        crate::codec::pickle::encode(value, &mut out).unwrap();
        out
    }

    #[test]
    fn integers_past_i64_read_as_the_rust_integer_that_holds_them() {
        assert_eq!(
            decode::<Vec<u64>>(&pickled(&vec![u64::MAX, 1])).unwrap(),
            [u64::MAX, 1]
        );
        // pickle.dumps(-2**100, 5) and pickle.dumps(2**127 + 5, 5)
        let minus = hex("80059510000000000000008a0d000000000000000000000000f02e");
        assert_eq!(decode::<i128>(&minus).unwrap(), -(1i128 << 100));
        let big = hex("80059514000000000000008a1105000000000000000000000000000080002e");
        assert_eq!(decode::<u128>(&big).unwrap(), (1u128 << 127) + 5);
        // pickle.dumps(2**64 - 1, 5): what Python stores.
        let python = hex("8005950c000000000000008a09ffffffffffffffff002e");
        assert_eq!(decode::<u64>(&python).unwrap(), u64::MAX);
        // Too large for an i64: an error that says so, not a wrapped number.
        assert!(decode::<i64>(&python).is_err());
        // pickle.dumps(2**200, 5): no Rust integer holds it.
        let e = decode::<u128>(&hex(
            "8005951d000000000000008a1a00000000000000000000000000000000000000000000000000012e",
        ))
        .unwrap_err();
        assert!(e.0.contains("61 digits"), "{e}");
    }
}
