//! A stored value shown to people (the CLI's `get`): what a Python client would read, in
//! Python's own notation where the value has one, or why it cannot be shown.

use std::fmt::Write;

use super::{
    inflate, FLAG_BINCODE, FLAG_BOOL, FLAG_BYTES, FLAG_INT, FLAG_JSON, FLAG_PICKLE, FLAG_TEXT,
    FLAG_ZLIB, UNREADABLE,
};

/// The value of `bytes` stored with `flags`, shown: text as it is (control characters
/// escaped, `\n` and `\t` kept), integers as their digits, bytes that are not UTF-8 as
/// Python's `b'...'`, pickles as Python's `repr` (with feature `pickle`), JSON as its text,
/// a compressed value inflated up to `inflate_limit` bytes. `Err` says what the bytes are
/// when they are no value a reader would take: text that is not UTF-8, an integer that is
/// not one, a pickle or a compressed value that does not read, a bincode value (only a Rust
/// reader that knows its type reads it), flags no codec knows.
pub fn show_within(bytes: &[u8], flags: u32, inflate_limit: usize) -> Result<String, String> {
    if flags & FLAG_ZLIB != 0 {
        return match inflate(bytes, inflate_limit) {
            Ok(inflated) => show_within(&inflated, flags & !FLAG_ZLIB, inflate_limit),
            Err(e) => Err(format!("{} bytes that do not inflate: {e}", bytes.len())),
        };
    }
    match super::encoding(flags) {
        FLAG_TEXT => match std::str::from_utf8(bytes) {
            Ok(text) => Ok(escaped(text)),
            Err(_) => Err(format!(
                "{} bytes of text (flag 16) that are not UTF-8, which Python clients refuse",
                bytes.len()
            )),
        },
        FLAG_INT | FLAG_BOOL => match std::str::from_utf8(bytes).map(str::trim_ascii) {
            // memcached pads a `decr` that shortens a number with spaces (`"9 "`), which
            // every client reads as the number.
            Ok(digits) if is_integer(digits) => Ok(digits.to_owned()),
            _ => Err(format!(
                "{} bytes with flag {flags} (an integer) that are no integer",
                bytes.len()
            )),
        },
        FLAG_BYTES => Ok(match std::str::from_utf8(bytes) {
            Ok(text) => escaped(text),
            Err(_) => {
                let mut shown = String::new();
                bytes_repr(bytes, &mut shown);
                shown
            }
        }),
        FLAG_PICKLE => show_pickle(bytes),
        f if f & FLAG_BINCODE != 0 => Err(format!(
            "a bincode value of {} bytes (only a Rust reader that knows its type reads it)",
            bytes.len()
        )),
        f if f & FLAG_JSON != 0 => {
            match std::str::from_utf8(bytes.strip_prefix(&[UNREADABLE]).unwrap_or(bytes)) {
                Ok(json) => Ok(escaped(json)),
                Err(_) => Err(format!("{} bytes of JSON that are not UTF-8", bytes.len())),
            }
        }
        f => Err(format!(
            "{} bytes with flags {f:#x}, which no codec knows",
            bytes.len()
        )),
    }
}

/// An integer as Python's clients read one: an optional sign, then ASCII digits.
fn is_integer(text: &str) -> bool {
    let digits = text
        .strip_prefix('-')
        .or_else(|| text.strip_prefix('+'))
        .unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `text` with its control characters other than `\n` and `\t` escaped (`\x1b`,
/// `\u2028`), and its backslashes doubled then, so that an escape reads as one: a value
/// holding a terminal's escape sequence, or one that reorders the text around it, is
/// shown, not acted on by the terminal (outside audits). A text with no such character is
/// shown as it is, unless it holds what reads as an escape (`\x`, `\u`, `\\`): then its
/// backslashes are doubled too, so that the text `a\x1b` and `a` followed by ESC are not
/// shown alike (an outside audit).
fn escaped(text: &str) -> String {
    let reads_as_escape = text
        .as_bytes()
        .windows(2)
        .any(|w| matches!(w, [b'\\', b'x' | b'u' | b'\\']));
    if !reads_as_escape && !text.chars().any(hidden) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match u32::from(c) {
            _ if c == '\\' => out.push_str("\\\\"),
            _ if !hidden(c) => out.push(c),
            n if n < 0x100 => {
                let _ = write!(out, "\\x{n:02x}");
            }
            n => {
                let _ = write!(out, "\\u{n:04x}");
            }
        }
    }
    out
}

/// A character a terminal would act on rather than show: a control character, a line or
/// paragraph separator, or a bidirectional formatting character (which reorders the text
/// around it).
fn hidden(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `b`, as Python's `repr` of `bytes` shows it: `b'...'` (or `b"..."` when that needs no
/// escape), printable ASCII as it is, `\\`, `\n`, `\r`, `\t` and the quote escaped, other
/// bytes as `\xNN`.
pub(super) fn bytes_repr(b: &[u8], out: &mut String) {
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

#[cfg(feature = "pickle")]
fn show_pickle(bytes: &[u8]) -> Result<String, String> {
    super::pickle::repr(bytes).map_err(|e| format!("a {}-byte pickle: {e}", bytes.len()))
}

#[cfg(not(feature = "pickle"))]
fn show_pickle(bytes: &[u8]) -> Result<String, String> {
    match super::plain::pickled_bool(bytes) {
        Some(true) => Ok("True".to_owned()),
        Some(false) => Ok("False".to_owned()),
        None => Err(format!(
            "a {}-byte pickle (the `pickle` feature reads it)",
            bytes.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_a_reader_takes_are_shown_and_the_others_say_why_not() {
        let limit = 1 << 20;
        let show = |bytes: &[u8], flags| show_within(bytes, flags, limit);
        assert_eq!(
            show(b"h\xc3\xa9llo\n\tx", FLAG_TEXT).unwrap(),
            "h\u{e9}llo\n\tx"
        );
        assert_eq!(
            show(b"red\x1b[31mX\r", FLAG_TEXT).unwrap(),
            "red\\x1b[31mX\\x0d"
        );
        assert_eq!(show(b"a\xe2\x80\xa8b", FLAG_TEXT).unwrap(), "a\\u2028b");
        // Bidirectional overrides escaped; backslashes doubled once anything is escaped.
        assert_eq!(
            show("abc\u{202e}d".as_bytes(), FLAG_TEXT).unwrap(),
            "abc\\u202ed"
        );
        assert_eq!(show(b"\\x1b\x1b", FLAG_TEXT).unwrap(), "\\\\x1b\\x1b");
        assert_eq!(show(b"C:\\dir", FLAG_TEXT).unwrap(), "C:\\dir");
        // A text that reads as an escape is not shown as the character it names.
        assert_eq!(show(b"a\\x1b", FLAG_TEXT).unwrap(), "a\\\\x1b");
        assert_eq!(show(b"a\x1b", FLAG_TEXT).unwrap(), "a\\x1b");
        assert_eq!(show(b"C:\\\\dir", FLAG_TEXT).unwrap(), "C:\\\\\\\\dir");
        assert_eq!(show(b"9 ", FLAG_INT).unwrap(), "9");
        assert!(show(b"ab\xffcd", FLAG_TEXT)
            .unwrap_err()
            .contains("not UTF-8"));
        assert_eq!(show(b"-42", FLAG_INT).unwrap(), "-42");
        assert_eq!(show(b"1", FLAG_BOOL).unwrap(), "1");
        assert_eq!(show(b"+4", FLAG_BOOL).unwrap(), "+4");
        for bad in [&b"abc"[..], b"", b"-", b"4 2", b"+-4"] {
            assert!(
                show(bad, FLAG_INT).unwrap_err().contains("no integer"),
                "{bad:?}"
            );
        }
        assert_eq!(show(b"plain", FLAG_BYTES).unwrap(), "plain");
        assert_eq!(show(b"\x00\xff'", FLAG_BYTES).unwrap(), "b\"\\x00\\xff'\"");
        // Another application's bit beside the type bits: read as Python's clients read it.
        assert_eq!(show(b"x", FLAG_TEXT | 4096).unwrap(), "x");
        assert_eq!(show(b"x", FLAG_TEXT | 256).unwrap(), "x");
        assert!(show(b"x", FLAG_TEXT | 0x20).is_err());
        assert!(show(b"x", FLAG_PICKLE | FLAG_INT)
            .unwrap_err()
            .contains("0x5"));
        assert!(show(b"\x01\x02", FLAG_BINCODE)
            .unwrap_err()
            .contains("bincode"));
        // Bits 9 and 10 beside Python's int, bool or pickle bits, or both together, are
        // another application's, as the decoder reads them (an outside audit: `4 | 512`
        // was "a bincode value" here where Python's clients and `Cache::get` read 7).
        assert_eq!(show(b"7", FLAG_INT | FLAG_BINCODE).unwrap(), "7");
        assert_eq!(show(b"1", FLAG_BOOL | FLAG_JSON).unwrap(), "1");
        assert_eq!(show(b"7", 7 << 8).unwrap(), "7");
        assert!(!show(b"7", FLAG_PICKLE | FLAG_JSON)
            .unwrap_err()
            .contains("JSON"));
        assert!(show(b"\x00\x01", FLAG_TEXT | FLAG_ZLIB)
            .unwrap_err()
            .contains("do not inflate"));
    }
}
