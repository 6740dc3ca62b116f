//! The values every writer stores: each type newcache writes, and what Python should read.

use std::collections::HashMap;
use std::fmt::Write as _;

use newcache::{Cache, SetOptions};
use serde::{Serialize, Serializer};

/// What the default-settings promise covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Str,
    Int,
    Bool,
    Bytes,
    Other,
}

/// A Python value, written out as a literal for `ast.literal_eval`.
pub(super) enum Py {
    Str(String),
    Int(String),
    Bool(bool),
    Bytes(Vec<u8>),
    Float(f64),
    None,
    List(Vec<Py>),
    Tuple(Vec<Py>),
    Dict(Vec<(Py, Py)>),
}

impl Py {
    pub(super) fn str(s: &str) -> Py {
        Py::Str(s.to_string())
    }

    pub(super) fn int(n: impl ToString) -> Py {
        Py::Int(n.to_string())
    }

    pub(super) fn literal(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    pub(super) fn write(&self, out: &mut String) {
        match self {
            Py::Str(s) => {
                out.push('\'');
                for c in s.chars() {
                    match c {
                        '\\' | '\'' => {
                            out.push('\\');
                            out.push(c);
                        }
                        c if c.is_control() => {
                            let _ = write!(out, "\\U{:08x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('\'');
            }
            Py::Int(n) => out.push_str(n),
            Py::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
            Py::Bytes(b) => {
                out.push_str("b'");
                for byte in b {
                    let _ = write!(out, "\\x{byte:02x}");
                }
                out.push('\'');
            }
            Py::Float(f) => {
                let _ = write!(out, "{f:?}");
            }
            Py::None => out.push_str("None"),
            Py::List(items) | Py::Tuple(items) => {
                let tuple = matches!(self, Py::Tuple(_));
                out.push(if tuple { '(' } else { '[' });
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                if tuple && items.len() == 1 {
                    out.push(',');
                }
                out.push(if tuple { ')' } else { ']' });
            }
            Py::Dict(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    k.write(out);
                    out.push_str(": ");
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Bytes as serde's bytes type (what `serde_bytes` does), not a sequence of `u8`.
pub(super) struct SerdeBytes(&'static [u8]);

impl Serialize for SerdeBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

#[derive(Serialize)]
pub(super) struct Ab {
    pub(super) a: i32,
    pub(super) b: String,
}

pub(super) fn big_text() -> String {
    "The quick brown fox jumps over the lazy dog; naïve café. "
        .repeat(3600)
        .chars()
        .take(200 * 1024)
        .collect()
}

/// 200 KB of bytes that compress well.
pub(super) fn big_bytes() -> Vec<u8> {
    (0..200 * 1024).map(|i| (i % 251) as u8).collect()
}

/// A structured value of about 20 KB.
pub(super) fn big_list() -> Vec<String> {
    (0..2000).map(|i| format!("item-{i}")).collect()
}

pub(super) type Write = fn(&Cache, &str, SetOptions) -> newcache::Result<()>;

pub(super) struct Value {
    /// The Rust side, for the table (markdown inside backticks).
    pub(super) rust: &'static str,
    pub(super) kind: Kind,
    pub(super) python: Py,
    /// The Python value for the table, when its literal is too long to show.
    pub(super) python_doc: Option<&'static str>,
    pub(super) write: Write,
}

pub(super) fn values() -> Vec<Value> {
    fn v(rust: &'static str, kind: Kind, python: Py, write: Write) -> Value {
        Value {
            rust,
            kind,
            python,
            python_doc: None,
            write,
        }
    }
    let big = -(1i128 << 100);
    vec![
        v(
            "\"héllo\": String",
            Kind::Str,
            Py::str("héllo"),
            |c, k, o| c.set(k, &"héllo".to_string(), o),
        ),
        v("\"\": String", Kind::Str, Py::str(""), |c, k, o| {
            c.set(k, &String::new(), o)
        }),
        v("42i64", Kind::Int, Py::int(42), |c, k, o| {
            c.set(k, &42i64, o)
        }),
        v("-7i64", Kind::Int, Py::int(-7), |c, k, o| {
            c.set(k, &-7i64, o)
        }),
        v("u64::MAX", Kind::Int, Py::int(u64::MAX), |c, k, o| {
            c.set(k, &u64::MAX, o)
        }),
        v("-(1i128 << 100)", Kind::Int, Py::int(big), |c, k, o| {
            c.set(k, &-(1i128 << 100), o)
        }),
        v("u128::MAX", Kind::Int, Py::int(u128::MAX), |c, k, o| {
            c.set(k, &u128::MAX, o)
        }),
        v("true", Kind::Bool, Py::Bool(true), |c, k, o| {
            c.set(k, &true, o)
        }),
        v("false", Kind::Bool, Py::Bool(false), |c, k, o| {
            c.set(k, &false, o)
        }),
        v(
            "serde bytes [0, 1, 255]",
            Kind::Bytes,
            Py::Bytes(vec![0, 1, 255]),
            |c, k, o| c.set(k, &SerdeBytes(&[0, 1, 255]), o),
        ),
        v(
            "vec![0u8, 1, 255]",
            Kind::Bytes,
            Py::Bytes(vec![0, 1, 255]),
            |c, k, o| c.set(k, &vec![0u8, 1, 255], o),
        ),
        v(
            "Vec::<u8>::new()",
            Kind::Bytes,
            Py::Bytes(Vec::new()),
            |c, k, o| c.set(k, &Vec::<u8>::new(), o),
        ),
        v(
            "Vec::<String>::new()",
            Kind::Other,
            Py::List(Vec::new()),
            |c, k, o| c.set(k, &Vec::<String>::new(), o),
        ),
        v("2.5f64", Kind::Other, Py::Float(2.5), |c, k, o| {
            c.set(k, &2.5f64, o)
        }),
        v("None::<i32>", Kind::Other, Py::None, |c, k, o| {
            c.set(k, &None::<i32>, o)
        }),
        v("Some(5i32)", Kind::Other, Py::int(5), |c, k, o| {
            c.set(k, &Some(5i32), o)
        }),
        v(
            "vec![\"chess\", \"go\"]: Vec<String>",
            Kind::Other,
            Py::List(vec![Py::str("chess"), Py::str("go")]),
            |c, k, o| c.set(k, &vec!["chess".to_string(), "go".to_string()], o),
        ),
        v(
            "Ab { a: 1, b: \"x\" } (serde derive)",
            Kind::Other,
            Py::Dict(vec![
                (Py::str("a"), Py::int(1)),
                (Py::str("b"), Py::str("x")),
            ]),
            |c, k, o| {
                let ab = Ab {
                    a: 1,
                    b: "x".into(),
                };
                c.set(k, &ab, o)
            },
        ),
        v(
            "HashMap<String, i32> {\"chess\": 1, \"go\": 2}",
            Kind::Other,
            Py::Dict(vec![
                (Py::str("chess"), Py::int(1)),
                (Py::str("go"), Py::int(2)),
            ]),
            |c, k, o| {
                let map: HashMap<String, i32> = [("chess".into(), 1), ("go".into(), 2)].into();
                c.set(k, &map, o)
            },
        ),
        v(
            "(1i32, \"x\")",
            Kind::Other,
            Py::Tuple(vec![Py::int(1), Py::str("x")]),
            |c, k, o| c.set(k, &(1i32, "x"), o),
        ),
        // serde cannot tell a nested Vec<u8> from a Vec<u16>: it is a sequence of integers,
        // whose natural Python form is a list of ints. Only a top-level value is bytes.
        v(
            "vec![vec![0u8, 1], vec![255]]",
            Kind::Other,
            Py::List(vec![
                Py::List(vec![Py::int(0), Py::int(1)]),
                Py::List(vec![Py::int(255)]),
            ]),
            |c, k, o| c.set(k, &vec![vec![0u8, 1], vec![255u8]], o),
        ),
        // Bytes inside a structure, as serde_bytes gives them (`serialize_bytes`).
        v(
            "vec![serde bytes [0, 1], serde bytes [255]]",
            Kind::Other,
            Py::List(vec![Py::Bytes(vec![0, 1]), Py::Bytes(vec![255])]),
            |c, k, o| c.set(k, &vec![SerdeBytes(&[0, 1]), SerdeBytes(&[255])], o),
        ),
        v("'é': char", Kind::Other, Py::str("é"), |c, k, o| {
            c.set(k, &'é', o)
        }),
        Value {
            python_doc: Some("'The quick brown fox jumps...' (204800 characters)"),
            ..v(
                "200 KB String (repeated text)",
                Kind::Other,
                Py::Str(big_text()),
                |c, k, o| c.set(k, &big_text(), o),
            )
        },
        Value {
            python_doc: Some("bytes(i % 251 for i in range(204800))"),
            ..v(
                "200 KB Vec<u8>",
                Kind::Bytes,
                Py::Bytes(big_bytes()),
                |c, k, o| c.set(k, &big_bytes(), o),
            )
        },
        Value {
            python_doc: Some("['item-0', 'item-1', ..., 'item-1999']"),
            ..v(
                "Vec<String> of 2000 items (about 20 KB)",
                Kind::Other,
                Py::List(big_list().iter().map(|s| Py::str(s)).collect()),
                |c, k, o| c.set(k, &big_list(), o),
            )
        },
    ]
}
