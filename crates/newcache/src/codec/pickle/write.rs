//! Writing a value as a pickle ([`encode`]): serde-pickle's protocol 3, checked by the scan
//! so that newcache reads back whatever it writes.

use serde::Serialize;

use super::scan::scan;
#[cfg(doc)]
use super::MAX_DEPTH;
use super::{err, pickle_error, PROTO, READ_RAW, STOP};
use crate::codec::CodecError;

/// Appends the pickle (protocol 3, serde-pickle's) of `value`.
///
/// A value that nests deeper than [`MAX_DEPTH`] is refused here, as reading refuses it: every
/// pickle this writes, it reads back.
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    if let Some(said) = crate::codec::check::ambiguous(value, false) {
        return Err(err(format!("pickle: {said}")));
    }
    let start = out.len();
    // What serde-pickle's to_writer does, which needs a sized value.
    out.extend_from_slice(&[PROTO, 3]);
    let mut serializer = serde_pickle::Serializer::new(&mut *out, serde_pickle::SerOptions::new());
    value.serialize(&mut serializer).map_err(pickle_error)?;
    out.push(STOP);
    if let Err(e) = scan(out.get(start..).unwrap_or_default()) {
        out.truncate(start);
        // The reader's advice (its bytes with get_raw) is for what is stored: nothing is.
        let said =
            e.0.replace(&format!("{READ_RAW}, or "), "")
                .replace(READ_RAW, "store it with codec=bincode");
        return Err(err(format!(
            "the value cannot be stored as a pickle newcache reads back: {said}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::pickle::decode;

    #[test]
    fn a_value_too_deep_to_read_back_is_refused_when_written() {
        // 128 nested lists: written and read; 129: refused at once, nothing written.
        #[derive(serde::Serialize)]
        struct Nest(Vec<Nest>);
        fn nested(depth: usize) -> Nest {
            (0..depth).fold(Nest(Vec::new()), |inner, _| Nest(vec![inner]))
        }
        let mut out = Vec::new();
        encode(&nested(127), &mut out).unwrap();
        assert!(decode::<serde_pickle::Value>(&out).is_ok());
        let mut out = b"kept".to_vec();
        let e = encode(&nested(128), &mut out).unwrap_err();
        assert!(e.0.contains("deeper than 128"), "{e}");
        // Nothing was stored: no reader's advice.
        assert!(
            !e.0.contains("get_raw") && e.0.contains("store it flatter"),
            "{e}"
        );
        assert_eq!(out, b"kept");
    }
}
