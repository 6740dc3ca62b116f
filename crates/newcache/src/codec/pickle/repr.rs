//! A pickle shown as Python shows it (`repr`): what the CLI's `get` prints. Tuples stay
//! tuples, sets sets and bytes `b'...'`, where the serde value's own display made them
//! lists and byte lists (an outside audit). A dict's keys come in sorted order: serde-pickle
//! keeps a dict as a sorted map.

use std::fmt::Write;

use serde_pickle::{HashableValue, Value};

use super::read::value_of;
use crate::codec::CodecError;

/// `bytes`, a pickle, as Python's `repr` of its value; a django-newcache herd tuple shows
/// its value.
pub fn repr(bytes: &[u8]) -> Result<String, CodecError> {
    let (scanned, value) = value_of(bytes)?;
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
        Value::Bytes(b) => crate::codec::show::bytes_repr(b, out),
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

/// A float as Python's `repr`: the shortest digits that read back as it, positional from
/// 1e-4 up to 1e16 (with `.0` when whole), else `1e+16`, `1.5e-07`. Rust's own `{}` wrote
/// every float positionally, so `1e+16` read as the integer 10000000000000000 (an outside
/// audit). Of two shortest candidates equally near (17 digits, a tie: `2**50 + 0.25`),
/// Python takes the even one, as Rust's exact formatting does, where its shortest takes the
/// one above (another audit: `1125899906842624.3` for Python's `...624.2`).
fn write_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("nan");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
        return;
    }
    let shortest = format!("{f:e}");
    let mantissa_digits = shortest
        .split('e')
        .next()
        .unwrap_or_default()
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    let scientific = if mantissa_digits >= 17 {
        format!("{f:.16e}")
    } else {
        shortest
    };
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    out.push_str(sign);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.trim_end_matches('0') {
        "" => "0",
        trimmed => trimmed,
    };
    if (-4..16).contains(&exponent) {
        if exponent < 0 {
            out.push_str("0.");
            for _ in 0..(-exponent - 1) {
                out.push('0');
            }
            out.push_str(digits);
        } else {
            let whole = usize::try_from(exponent).unwrap_or(0) + 1;
            let (int, frac) = digits.split_at(whole.min(digits.len()));
            out.push_str(int);
            for _ in int.len()..whole {
                out.push('0');
            }
            out.push('.');
            out.push_str(if frac.is_empty() { "0" } else { frac });
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.unsigned_abs());
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
            c if !printable(c) => {
                let n = u32::from(c);
                let _ = match n {
                    0..=0xff => write!(out, "\\x{n:02x}"),
                    0x100..=0xffff => write!(out, "\\u{n:04x}"),
                    _ => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Whether Python's `repr` shows `c` as it is: not a control, format, surrogate, private
/// use or unassigned character, nor a separator other than the space (`str.isprintable`).
/// Rust's `str::escape_debug` escapes exactly those (the same categories, its
/// `unicode::printable` table) and, at a string's start only, combining marks, which
/// Python shows: so `c` is asked after a letter. (Only control characters were escaped:
/// U+0085, U+00A0, U+200B and U+2028 were written raw, an outside audit.)
fn printable(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let after_a = format!("a{c}");
    after_a.escape_debug().eq(after_a.chars())
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
            // Floats past 1e16 or under 1e-4 in Python's exponent form (they read as
            // integers: an outside audit).
            (
                "80059571000000000000005d9428474341c37937e08000473e8421f5f40d837647437b69b4ba630f35474450000000000000474480f0cf064dd592470000000000000001473f1a36e2eb1c432d473ee4f8b588e368f147800000000000000047430c6bf526340000473fb999999999999a4781bac9a7b3b7302f652e",
                "[1e+16, 1.5e-07, 1.2345678901234568e+17, 1.1805916207174113e+21, 1e+22, 5e-324, 0.0001, 1e-05, -0.0, 1000000000000000.0, 0.1, -2.5e-300]",
            ),
            // Ties between two shortest forms taken even, as Python does; random doubles.
            (
                "80059537010000000000005d942847431000000000000147431000000000000347800000000000000047000000000000000047405edd2f1a9fbe77473f1a36e2eb1c432d477e41eb2d6600583547000000000000000147c004000000000000474341c37937e08000474341c37937e07fff473fd3333333333334473fd555555555555547bee4f8b588e368f1473ee9e3abe16fc70d4741678c29dccccccd47f2a74de452e6b438476513270e269e0d37470c5c7fd0a6a3a45047d23f0824128b2f33471818e811892f902b479531985d5d9dc9f847e8e25d940ed904754736f675cc81e74ef5471600a35a099950d8476b0d549b6f03675a473d9c172411e20b8f478d116ece1738f7d947c1026d8cf945b304474123f3107faa06d847c126f61827c8632647c120e464243e0f0c47410f1c938ef929c847412b5373c5137304652e",
                "[1125899906842624.2, 1125899906842624.8, -0.0, 0.0, 123.456, 0.0001, 1.5e+300, 5e-324, -2.5, 1e+16, 9999999999999998.0, 0.30000000000000004, 0.3333333333333333, -1e-05, 1.2345e-05, 12345678.9, -1.989032661366619e+244, 7.761117632285041e+178, 3.980498358697587e-249, -1.5432835417340557e+88, 1.3647584518757569e-192, -1.3701135617873088e-206, -1.7160537630466207e+197, 6.294675241195386e-44, 1.0613447212142254e-202, 4.708325160387546e+207, 6.387016158513563e-12, -9.973130378568733e-246, -150961.62171497208, 653704.249344076, -752396.0777007088, -553522.0707859709, 254866.4448111786, 895417.8849140112]",
            ),
            // Characters Python does not print as they are, escaped as it escapes them; a
            // combining mark and an emoji as they are.
            (
                "8005951e000000000000008c1ac285c2a0c2ade2808be280a82065cc8120f09f988020f3a08081942e",
                "'\\x85\\xa0\\xad\\u200b\\u2028 e\u{301} \u{1f600} \\U000e0001'",
            ),
            // A dict shared by two keys (serde-pickle alone could not read it).
            (
                "80059523000000000000007d94288c06617574686f72947d948c026964944b01738c06656469746f72946802752e",
                "{'author': {'id': 1}, 'editor': {'id': 1}}",
            ),
        ];
        for (pickle, shown) in cases {
            assert_eq!(repr(&hex(pickle)).unwrap(), shown, "{pickle}");
        }
    }

    /// `b''` as protocols 0 to 2 pickle it (`bytes()`, python-memcached's default): shown
    /// `b''`, as Python shows it (it was `()`: an outside audit). Printed by Python 3.11:
    /// `pickle.dumps(v, p).hex()` for p in 0, 1, 2.
    #[test]
    fn empty_bytes_of_old_protocols_show_as_bytes() {
        let cases = [
            ("635f5f6275696c74696e5f5f0a62797465730a70300a28745270310a2e", "b''"),
            ("635f5f6275696c74696e5f5f0a62797465730a7100295271012e", "b''"),
            ("8002635f5f6275696c74696e5f5f0a62797465730a7100295271012e", "b''"),
            (
                "286470300a566176617461720a70310a635f5f6275696c74696e5f5f0a62797465730a70320a28745270330a73566e616d650a70340a56780a70350a732e",
                "{'avatar': b'', 'name': 'x'}",
            ),
            (
                "80027d71002858060000006176617461727101635f5f6275696c74696e5f5f0a62797465730a71022952710358040000006e616d6571045801000000787105752e",
                "{'avatar': b'', 'name': 'x'}",
            ),
            (
                "286c70300a635f5f6275696c74696e5f5f0a62797465730a70310a28745270320a6167320a61635f636f646563730a656e636f64650a70330a2856610a70340a566c6174696e310a70350a7470360a5270370a612e",
                "[b'', b'', b'a']",
            ),
            (
                "80025d710028635f5f6275696c74696e5f5f0a62797465730a7101295271026802635f636f646563730a656e636f64650a7103580100000061710458060000006c6174696e317105867106527107652e",
                "[b'', b'', b'a']",
            ),
        ];
        for (pickle, shown) in cases {
            assert_eq!(repr(&hex(pickle)).unwrap(), shown, "{pickle}");
        }
    }
}
