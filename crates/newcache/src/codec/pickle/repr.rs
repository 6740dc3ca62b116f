//! A pickle shown as Python shows it (`repr`): what the CLI's `get` prints. Tuples stay
//! tuples, sets sets and bytes `b'...'`, where the serde value's own display made them
//! lists and byte lists (an outside audit). A dict's keys come in sorted order: serde-pickle
//! keeps a dict as a sorted map.

use std::fmt::Write;

use serde_pickle::{HashableValue, Value};

use super::read::options;
use super::scan::scan;
use crate::codec::CodecError;

/// `bytes`, a pickle, as Python's `repr` of its value; a django-newcache herd tuple shows
/// its value.
pub fn repr(bytes: &[u8]) -> Result<String, CodecError> {
    let scanned = scan(bytes)?;
    let value = serde_pickle::value_from_slice(bytes, options()).map_err(|e| scanned.why(e))?;
    let value = match (scanned.marker, value) {
        (Some(_), Value::Tuple(mut parts)) if parts.len() == 3 => parts.swap_remove(1),
        (_, value) => value,
    };
    let mut out = String::new();
    write_value(&value, &mut out);
    Ok(out)
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::None => out.push_str("None"),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::I64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::F64(f) => write_float(*f, out),
        Value::Bytes(b) => write_bytes(b, out),
        Value::String(s) => write_str(s, out),
        Value::List(items) => write_items("[", items.iter(), "]", out),
        Value::Tuple(items) if items.len() == 1 => write_items("(", items.iter(), ",)", out),
        Value::Tuple(items) => write_items("(", items.iter(), ")", out),
        Value::Set(items) if items.is_empty() => out.push_str("set()"),
        Value::Set(items) => write_hashables("{", items.iter(), "}", out),
        Value::FrozenSet(items) if items.is_empty() => out.push_str("frozenset()"),
        Value::FrozenSet(items) => write_hashables("frozenset({", items.iter(), "})", out),
        Value::Dict(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(&k.clone().into_value(), out);
                out.push_str(": ");
                write_value(v, out);
            }
            out.push('}');
        }
    }
}

fn write_items<'a>(
    open: &str,
    items: impl Iterator<Item = &'a Value>,
    close: &str,
    out: &mut String,
) {
    out.push_str(open);
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_value(item, out);
    }
    out.push_str(close);
}

fn write_hashables<'a>(
    open: &str,
    items: impl Iterator<Item = &'a HashableValue>,
    close: &str,
    out: &mut String,
) {
    let values: Vec<Value> = items.map(|h| h.clone().into_value()).collect();
    write_items(open, values.iter(), close, out);
}

fn write_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("nan");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
    } else if f == f.trunc() && f.abs() < 1e16 {
        let _ = write!(out, "{f:.1}");
    } else {
        let _ = write!(out, "{f}");
    }
}

fn write_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

fn write_bytes(b: &[u8], out: &mut String) {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    out.push('b');
    out.push(char::from(quote));
    for &byte in b {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            byte if byte == quote => {
                out.push('\\');
                out.push(char::from(byte));
            }
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out.push(char::from(quote));
}

#[cfg(test)]
mod tests {
    use super::repr;
    use crate::codec::pickle::tests::hex;

    #[test]
    fn values_show_as_python_shows_them() {
        // pickle.dumps(v, 5).hex() and repr(v), printed by Python 3.11 for each v.
        let cases = [
            ("8005950b000000000000004b014b028c01789487942e", "(1, 2, 'x')"),
            ("8005950c000000000000004b0185945d944b026186942e", "((1,), [2])"),
            ("8005950800000000000000284b014b0291942e", "frozenset({1, 2})"),
            ("80058f942e", "set()"),
            ("80059509000000000000008f94284b014b02902e", "{1, 2}"),
            (
                "800595290000000000000028430561275c0a00944e88474004000000000000474008000000000000477ff000000000000074942e",
                "(b\"a'\\\\\\n\\x00\", None, True, 2.5, 3.0, inf)",
            ),
            ("80059512000000000000007d948c0161945d94284b014b02859465732e", "{'a': [1, (2,)]}"),
            ("80059508000000000000008c0469742773942e", "\"it's\""),
            ("80059507000000000000008c03712278942e", "'q\"x'"),
            (
                "80059510000000000000008a0d00000040eaed7446d09c2c9f0c2e",
                "1000000000000000000000000000000",
            ),
            ("80059506000000000000004afbffffff2e", "-5"),
        ];
        for (pickle, shown) in cases {
            assert_eq!(repr(&hex(pickle)).unwrap(), shown, "{pickle}");
        }
    }
}
