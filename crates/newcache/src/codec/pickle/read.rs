//! Reading a pickle into a serde value ([`decode`]), after the scan has checked it;
//! django-newcache's herd tuple reads as its value.

use serde::de::{DeserializeOwned, IgnoredAny};

use super::pickle_error;
use super::scan::scan;
use crate::codec::CodecError;

fn options() -> serde_pickle::DeOptions {
    // Keeps the Marker's (empty) constructor arguments instead of a placeholder; the scan
    // refused every other object.
    serde_pickle::DeOptions::new().keep_restore_state()
}

/// Decodes a pickle as a `T`; a django-newcache herd tuple decodes as its value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if let Some(b) = crate::codec::plain::pickled_bool(bytes) {
        // newcache's own booleans: no need for the general path.
        return T::deserialize(serde::de::value::BoolDeserializer::<CodecError>::new(b));
    }
    match scan(bytes)?.marker {
        None => serde_pickle::from_slice(bytes, options()).map_err(pickle_error),
        Some(_) => serde_pickle::from_slice::<(IgnoredAny, T, IgnoredAny)>(bytes, options())
            .map(|(_, value, _)| value)
            .map_err(pickle_error),
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
}
