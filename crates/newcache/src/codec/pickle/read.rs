//! Reading a pickle into a serde value ([`decode`]), after the scan has checked it;
//! django-newcache's herd tuple reads as its value.

use serde::de::{Deserialize, DeserializeOwned, IgnoredAny};

use super::scan::{scan, Scan};
use super::value_de::ValueDe;
use crate::codec::CodecError;

pub(super) fn options() -> serde_pickle::DeOptions {
    // Keeps the Marker's (empty) constructor arguments instead of a placeholder; the scan
    // refused every other object.
    serde_pickle::DeOptions::new().keep_restore_state()
}

/// The value serde-pickle builds from `bytes`, once the scan has checked them, and what the
/// scan found.
pub(super) fn value_of(bytes: &[u8]) -> Result<(Scan, serde_pickle::Value), CodecError> {
    let scanned = scan(bytes)?;
    if let Some(rewritten) = scanned.with_empty_bytes(bytes) {
        // Scanned again: the memo stores the shared-object fix adds after are where they
        // are in the rewritten pickle.
        return value_of(&rewritten);
    }
    let value = match serde_pickle::value_from_slice(bytes, options()) {
        // An object of a shared container (the scan refused a container holding itself):
        // read again with its references counted right.
        Err(serde_pickle::Error::Syntax(serde_pickle::ErrorCode::Recursive)) => {
            let unshared = scanned.unshared(bytes).ok_or_else(|| {
                scanned.why(serde_pickle::Error::Syntax(
                    serde_pickle::ErrorCode::Recursive,
                ))
            })?;
            serde_pickle::value_from_slice(&unshared, options())
        }
        read => read,
    };
    match value {
        Ok(value) => Ok((scanned, value)),
        Err(e) => Err(scanned.why(e)),
    }
}

/// Decodes a pickle as a `T`; a django-newcache herd tuple decodes as its value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if let Some(b) = crate::codec::plain::pickled_bool(bytes) {
        // newcache's own booleans: no need for the general path.
        return T::deserialize(crate::codec::plain::PickledBool(b));
    }
    let (scanned, value) = value_of(bytes)?;
    let value = ValueDe(value);
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

    /// An object held by a container that appears twice is read in each copy (serde-pickle
    /// alone said "recursive structure found": an outside audit). Pickled by Python 3.11
    /// with protocols 0, 2 and 5: `{'author': u, 'editor': u}` with `u = {'id': 1, 'name':
    /// 'ann'}`; `(t, t)` with `t = ([1],)`; `[y, y, x]` with `x = [1]; y = [x]`; a dict
    /// `{'a': d, 'b': d, 'c': {'id': 5}}` with `d = {'id': 1}` (the key `'id'` shared
    /// inside and outside the shared dict); `a = ['s']` six times `a = [a, a]`.
    #[test]
    fn shared_containers_read_as_python_reads_them() {
        use serde_json::{json, Value};
        let cases = [
            (
                json!({"author": {"id": 1, "name": "ann"}, "editor": {"id": 1, "name": "ann"}}),
                [
                    "286470300a56617574686f720a70310a286470320a5669640a70330a49310a73566e616d650a70340a56616e6e0a70350a737356656469746f720a70360a67320a732e",
                    "80027d7100285806000000617574686f7271017d7102285802000000696471034b0158040000006e616d6571045803000000616e6e7105755806000000656469746f7271066802752e",
                    "80059531000000000000007d94288c06617574686f72947d94288c026964944b018c046e616d65948c03616e6e94758c06656469746f72946802752e",
                ],
            ),
            (
                json!([[[1]], [[1]]]),
                [
                    "2828286c70300a49310a617470310a67310a7470320a2e",
                    "80025d71004b016185710168018671022e",
                    "8005950c000000000000005d944b01618594680186942e",
                ],
            ),
            (
                json!([[[1]], [[1]], [1]]),
                [
                    "286c70300a286c70310a286c70320a49310a61616167310a6167320a612e",
                    "80025d7100285d71015d71024b01616168016802652e",
                    "80059511000000000000005d94285d945d944b01616168016802652e",
                ],
            ),
            (
                json!({"a": {"id": 1}, "b": {"id": 1}, "c": {"id": 5}}),
                [
                    "286470300a56610a70310a286470320a5669640a70330a49310a737356620a70340a67320a7356630a70350a286470360a67330a49350a73732e",
                    "80027d71002858010000006171017d71025802000000696471034b01735801000000627104680258010000006371057d710668034b0573752e",
                    "80059524000000000000007d94288c0161947d948c026964944b01738c01629468028c0163947d9468034b0573752e",
                ],
            ),
        ];
        for (expected, pickles) in cases {
            for pickled in pickles {
                let got: Value = decode(&hex(pickled)).unwrap_or_else(|e| panic!("{pickled}: {e}"));
                assert_eq!(got, expected, "{pickled}");
            }
        }
        let mut deep = json!(["s"]);
        for _ in 0..6 {
            deep = json!([deep.clone(), deep]);
        }
        for pickled in [
            "286c70300a286c70310a286c70320a286c70330a286c70340a286c70350a286c70360a56730a70370a616167360a616167350a616167340a616167330a616167320a616167310a612e",
            "80025d7100285d7101285d7102285d7103285d7104285d7105285d71065801000000737107616806656805656804656803656802656801652e",
            "8005952c000000000000005d94285d94285d94285d94285d94285d94285d948c017394616806656805656804656803656802656801652e",
        ] {
            let got: Value = decode(&hex(pickled)).unwrap();
            assert_eq!(got, deep, "{pickled}");
        }
    }

    /// `b''` as protocols 0 to 2 pickle it (`bytes()`) reads as empty bytes: a `Vec<u8>`
    /// empty, a self-describing value refusing bytes as it refuses protocol 5's (it was an
    /// empty list there: an outside audit). Python 3.11's `pickle.dumps(b'', p)`, p = 0, 2,
    /// and python-memcached's `{'avatar': b'', 'name': 'x'}` (protocol 0).
    #[test]
    fn empty_bytes_of_old_protocols_read_as_bytes() {
        for pickled in [
            "635f5f6275696c74696e5f5f0a62797465730a70300a28745270310a2e",
            "8002635f5f6275696c74696e5f5f0a62797465730a7100295271012e",
            // bytearray() in protocols 0, 2, 3 and 4.
            "635f5f6275696c74696e5f5f0a6279746561727261790a70300a28745270310a2e",
            "8002635f5f6275696c74696e5f5f0a6279746561727261790a7100295271012e",
            "8003636275696c74696e730a6279746561727261790a7100295271012e",
            "8004951d000000000000008c086275696c74696e73948c096279746561727261799493942952942e",
        ] {
            assert_eq!(decode::<Vec<u8>>(&hex(pickled)).unwrap(), Vec::<u8>::new());
            assert!(
                decode::<serde_json::Value>(&hex(pickled)).is_err(),
                "{pickled}"
            );
        }
        let dict = hex("286470300a566176617461720a70310a635f5f6275696c74696e5f5f0a62797465730a70320a28745270330a73566e616d650a70340a56780a70350a732e");
        #[derive(serde::Deserialize)]
        struct Profile {
            avatar: Vec<u8>,
            name: String,
        }
        let p: Profile = decode(&dict).unwrap();
        assert!(p.avatar.is_empty());
        assert_eq!(p.name, "x");
        assert!(decode::<serde_json::Value>(&dict).is_err());
    }
}
