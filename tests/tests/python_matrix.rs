//! Nothing silently wrong: every value type newcache writes, under every transport,
//! herd policy and codec, read back by every Python reader a Django shop uses, must come
//! back as the same value (as the natural Python type) or raise. A reader that returns
//! something else (`wrong`) or nothing for a stored value (`miss`) fails the test.
//!
//! One memcached; every writer configuration (its own `flavor=`, so keys never collide)
//! stores every value; then one `/usr/bin/python3` process (Debian's, with pylibmc,
//! pymemcache, python-memcached and Django 3.2) runs `tests/python/matrix_reader.py`, which
//! reads every key through every reader and classifies each cell. The matrix is rendered as
//! markdown and compared with the section of `docs/python-interop.md` between
//! `<!-- matrix:begin -->` and `<!-- matrix:end -->`; `NEWCACHE_BLESS=1` rewrites it.
//!
//! Also the default-settings promise: with no herd or codec parameter (text transport and
//! libmemcached binary), strings, integers, booleans and bytes read as `same` in pylibmc
//! (text and binary), pymemcache, and Django's PyLibMCCache and PyMemcacheCache.
//!
//! Two exemptions, shown in the table in parentheses ([`held_to_the_rule`]): under
//! `envelope=django-newcache` only the django-newcache reader is held to the rule (the format
//! is its herd tuple; any other reader gets the tuple, by design); under `compress_threshold`,
//! pymemcache and Django's PyMemcacheCache are not, on items stored compressed, while the same
//! run shows them reading pylibmc's own compressed values wrongly too (pymemcache 3.5.2 has no
//! zlib support). A `None` read as the default counts as the same (✓†) for readers that read a
//! `None` they stored themselves as the default, checked in the same run (Django's
//! MemcachedCache, django-newcache). What "natural" means per type, and how each client
//! decodes, is in docs/python-interop.md.
#![cfg(all(feature = "binary", feature = "json"))]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use newcache::{Cache, SetOptions, Ttl};
use newcache_testkit::Memcached;
use serde::{Serialize, Serializer};

const PYTHON: &str = "/usr/bin/python3";
const PYTHON_TIMEOUT: Duration = Duration::from_secs(120);
const BEGIN: &str = "<!-- matrix:begin -->";
const END: &str = "<!-- matrix:end -->";
const BLESS: &str =
    "NEWCACHE_BLESS=1 cargo test -p newcache-tests --all-features --test cache python_matrix";

// ---- writers ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Transport {
    Text,
    LmBinary,
    LmText,
}

impl Transport {
    const ALL: [Transport; 3] = [Transport::Text, Transport::LmBinary, Transport::LmText];

    fn label(self) -> &'static str {
        match self {
            Transport::Text => "text",
            Transport::LmBinary => "lm-binary",
            Transport::LmText => "lm-text",
        }
    }

    fn query(self) -> &'static str {
        match self {
            Transport::Text => "",
            Transport::LmBinary => "&binary=true",
            Transport::LmText => "&transport=libmemcached",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Herd {
    /// The default policy, a finite TTL.
    Lease,
    Reinsert,
    Early,
    /// Text transport only: libmemcached refuses it.
    Meta,
    /// `SetOptions::no_herd()`, a finite TTL.
    Off,
    /// `Ttl::Forever`, herd on.
    Forever,
    /// `lease` with `envelope=django-newcache`: herd-protected values stored as
    /// django-newcache stores them, `(newcache.Marker(), value, expiry)` pickled. Meant for
    /// clusters whose Python readers are django-newcache: any other reader gets the tuple,
    /// by design (see [`held_to_the_rule`]).
    DjangoEnvelope,
    /// `lease` with `compress_threshold=1024` (pylibmc's `min_compress_len`): the large value
    /// goes zlib-compressed (flag 8).
    Zlib,
}

impl Herd {
    const ALL: [Herd; 8] = [
        Herd::Lease,
        Herd::Reinsert,
        Herd::Early,
        Herd::Meta,
        Herd::Off,
        Herd::Forever,
        Herd::DjangoEnvelope,
        Herd::Zlib,
    ];

    fn label(self) -> &'static str {
        match self {
            Herd::Lease => "lease",
            Herd::Reinsert => "reinsert",
            Herd::Early => "early",
            Herd::Meta => "meta",
            Herd::Off => "off",
            Herd::Forever => "forever",
            Herd::DjangoEnvelope => "dn-envelope",
            Herd::Zlib => "zlib",
        }
    }

    fn query(self) -> &'static str {
        match self {
            Herd::Lease | Herd::Off | Herd::Forever => "",
            Herd::Reinsert => "&herd=reinsert",
            Herd::Early => "&herd=early",
            Herd::Meta => "&herd=meta",
            Herd::DjangoEnvelope => "&envelope=django-newcache",
            Herd::Zlib => "&compress_threshold=1024",
        }
    }

    fn options(self) -> SetOptions {
        match self {
            Herd::Off => SetOptions::new(Ttl::Seconds(300)).no_herd(),
            Herd::Forever => SetOptions::new(Ttl::Forever),
            _ => SetOptions::new(Ttl::Seconds(300)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Codec {
    /// No `codec=` parameter: whatever newcache's default is.
    Default,
    Bincode,
    Json,
    Pickle,
}

impl Codec {
    const TESTED: [Codec; 3] = [Codec::Bincode, Codec::Json, Codec::Pickle];

    fn label(self) -> &'static str {
        match self {
            Codec::Default => "default",
            Codec::Bincode => "bincode",
            Codec::Json => "json",
            Codec::Pickle => "pickle",
        }
    }

    fn query(self) -> &'static str {
        match self {
            Codec::Default => "",
            Codec::Bincode => "&codec=bincode",
            Codec::Json => "&codec=json",
            Codec::Pickle => "&codec=pickle",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Writer {
    transport: Transport,
    herd: Herd,
    codec: Codec,
}

impl Writer {
    fn label(self) -> String {
        format!(
            "{}/{}/{}",
            self.transport.label(),
            self.herd.label(),
            self.codec.label()
        )
    }

    fn url(self, addr: &str) -> String {
        format!(
            "newcache://{addr}/?flavor=m-{}-{}-{}{}{}{}",
            self.transport.label(),
            self.herd.label(),
            self.codec.label(),
            self.transport.query(),
            self.herd.query(),
            self.codec.query()
        )
    }

    /// Every transport x herd x codec the matrix covers: meta on the text transport only
    /// (libmemcached refuses it), django-newcache's envelope with the pickle codec only
    /// (newcache refuses to put another codec's bytes in it).
    fn matrix() -> Vec<Writer> {
        let mut all = Vec::new();
        for transport in Transport::ALL {
            for herd in Herd::ALL {
                if herd == Herd::Meta && transport != Transport::Text {
                    continue;
                }
                for codec in Codec::TESTED {
                    if herd == Herd::DjangoEnvelope && codec != Codec::Pickle {
                        continue;
                    }
                    all.push(Writer {
                        transport,
                        herd,
                        codec,
                    });
                }
            }
        }
        all
    }

    /// The default-settings promise: no herd or codec parameter at all.
    fn defaults() -> Vec<Writer> {
        [Transport::Text, Transport::LmBinary]
            .map(|transport| Writer {
                transport,
                herd: Herd::Lease,
                codec: Codec::Default,
            })
            .to_vec()
    }
}

// ---- values ----

/// What the default-settings promise covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    Bytes,
    Other,
}

/// A Python value, written out as a literal for `ast.literal_eval`.
enum Py {
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
    fn str(s: &str) -> Py {
        Py::Str(s.to_string())
    }

    fn int(n: impl ToString) -> Py {
        Py::Int(n.to_string())
    }

    fn literal(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
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
struct SerdeBytes(&'static [u8]);

impl Serialize for SerdeBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

#[derive(Serialize)]
struct Ab {
    a: i32,
    b: String,
}

fn big_text() -> String {
    "The quick brown fox jumps over the lazy dog; naïve café. "
        .repeat(3600)
        .chars()
        .take(200 * 1024)
        .collect()
}

/// 200 KB of bytes that compress well.
fn big_bytes() -> Vec<u8> {
    (0..200 * 1024).map(|i| (i % 251) as u8).collect()
}

/// A structured value of about 20 KB.
fn big_list() -> Vec<String> {
    (0..2000).map(|i| format!("item-{i}")).collect()
}

type Write = fn(&Cache, &str, SetOptions) -> newcache::Result<()>;

struct Value {
    /// The Rust side, for the table (markdown inside backticks).
    rust: &'static str,
    kind: Kind,
    python: Py,
    /// The Python value for the table, when its literal is too long to show.
    python_doc: Option<&'static str>,
    write: Write,
}

fn values() -> Vec<Value> {
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

// ---- readers ----

struct Reader {
    /// The id matrix_reader.py prints.
    id: &'static str,
    header: &'static str,
    /// Covered by the default-settings promise.
    promise: bool,
}

const READERS: [Reader; 8] = [
    Reader {
        id: "pylibmc",
        header: "pylibmc",
        promise: true,
    },
    Reader {
        id: "pylibmc_binary",
        header: "pylibmc binary",
        promise: true,
    },
    Reader {
        id: "pymemcache",
        header: "pymemcache",
        promise: true,
    },
    Reader {
        id: "python_memcached",
        header: "python-memcached",
        promise: false,
    },
    Reader {
        id: "django_pylibmc",
        header: "Django PyLibMCCache",
        promise: true,
    },
    Reader {
        id: "django_pymemcache",
        header: "Django PyMemcacheCache",
        promise: true,
    },
    Reader {
        id: "django_memcached",
        header: "Django MemcachedCache",
        promise: false,
    },
    Reader {
        id: "django_newcache",
        header: "django-newcache",
        promise: false,
    },
];

// ---- cells ----

/// The readers whose zlib support the compression writer's exemption is about: pymemcache
/// 3.5.2's `pickle_serde` (Django's `PyMemcacheCache` uses it) has none.
const NO_ZLIB_READERS: [&str; 2] = ["pymemcache", "django_pymemcache"];

/// The zlib flag (pylibmc's `min_compress_len`, newcache's `compress_threshold`).
const FLAG_ZLIB: u32 = 8;

/// Whether a cell counts for "nothing silently wrong". Every cell does, except:
///
/// - the other readers' under `envelope=django-newcache`: that format is django-newcache's
///   herd tuple, for clusters read by django-newcache, and any other reader gets the tuple
///   itself (or, without django-newcache installed, an import error);
/// - pymemcache's and Django's `PyMemcacheCache`'s under `compress_threshold`, for items
///   stored compressed (flag 8), when `zlib_unsupported` (checked in the same run) says that
///   reader also reads pylibmc's own compressed values wrongly: it has no zlib support.
///
/// The table still shows those cells, in parentheses.
fn held_to_the_rule(
    writer: Writer,
    reader: &Reader,
    flags: Option<u32>,
    zlib_unsupported: &BTreeSet<String>,
) -> bool {
    let envelope = writer.herd == Herd::DjangoEnvelope && reader.id != "django_newcache";
    let zlib = writer.herd == Herd::Zlib
        && flags.is_some_and(|f| f & FLAG_ZLIB != 0)
        && NO_ZLIB_READERS.contains(&reader.id)
        && zlib_unsupported.contains(reader.id);
    !envelope && !zlib
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Same,
    Raises,
    Miss,
    Wrong,
    /// The writer could not be built or the value not stored: nothing to read.
    Unwritten,
}

impl Class {
    fn parse(s: &str) -> Option<Class> {
        Some(match s {
            "same" => Class::Same,
            "raises" => Class::Raises,
            "miss" => Class::Miss,
            "wrong" => Class::Wrong,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
struct Cell {
    class: Class,
    label: String,
    detail: String,
    /// Not held to the rule ([`held_to_the_rule`]).
    exempt: bool,
}

impl Cell {
    /// What the table shows: no timestamps or values, so the same format renders the same.
    fn render(&self) -> String {
        if self.silently_wrong_by_design() {
            return format!(
                "({})",
                Cell {
                    exempt: false,
                    ..self.clone()
                }
                .render()
            );
        }
        match self.class {
            Class::Same if self.label == "own-none-default" => "✓†".into(),
            Class::Same => "✓".into(),
            Class::Raises => format!("✗ {}", self.label),
            Class::Miss => "miss".into(),
            Class::Wrong => format!("WRONG {}", self.label),
            Class::Unwritten => "—".into(),
        }
    }

    /// WRONG or miss, and failing the test.
    fn silently_wrong(&self) -> bool {
        matches!(self.class, Class::Wrong | Class::Miss) && !self.exempt
    }

    /// WRONG or miss where the writer's format is meant for other readers.
    fn silently_wrong_by_design(&self) -> bool {
        matches!(self.class, Class::Wrong | Class::Miss) && self.exempt
    }
}

/// One stored (or attempted) value: a writer and a value, and where it went.
struct Case {
    writer: usize,
    value: usize,
    /// The wire key, or why nothing was stored.
    stored: Result<String, String>,
}

/// pylibmc's own zlib-compressed value (`min_compress_len`), read back by one reader.
struct ZlibControl {
    /// `bytes` or `list`.
    what: String,
    /// The flags pylibmc stored it with.
    flags: Option<u32>,
    reader: String,
    cell: Cell,
}

struct Python {
    versions: String,
    /// Per reader id: does it read a `None` it stored itself as its default?
    own_none_default: BTreeMap<String, bool>,
    /// Per reader id: the repr of a `True` it stored itself and read back.
    own_bool: BTreeMap<String, String>,
    zlib: Vec<ZlibControl>,
    /// Per case id: the item's flags.
    flags: HashMap<usize, u32>,
    cells: HashMap<(usize, String), Cell>,
}

impl Python {
    /// The readers that read both of pylibmc's own compressed values (stored with the zlib
    /// flag) as WRONG or miss: they do not support zlib.
    fn zlib_unsupported(&self) -> BTreeSet<String> {
        let mut wrong: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &self.zlib {
            if c.flags.is_some_and(|f| f & FLAG_ZLIB != 0)
                && matches!(c.cell.class, Class::Wrong | Class::Miss)
            {
                *wrong.entry(c.reader.as_str()).or_default() += 1;
            }
        }
        let whats: BTreeSet<&str> = self.zlib.iter().map(|c| c.what.as_str()).collect();
        wrong
            .into_iter()
            .filter(|&(_, n)| n == whats.len() && n > 0)
            .map(|(r, _)| r.to_string())
            .collect()
    }
}

fn parse_class(class: &str, label: &str, detail: &str, line: &str) -> Cell {
    Cell {
        class: Class::parse(class)
            .unwrap_or_else(|| panic!("python printed an unknown class: {line}")),
        label: label.to_string(),
        detail: detail.to_string(),
        exempt: false,
    }
}

fn parse_flags(flags: &str) -> Option<u32> {
    flags.parse().ok()
}

fn run_python(spec: &Path) -> Python {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/matrix_reader.py");
    let mut child = Command::new(PYTHON)
        .arg(&script)
        .arg(spec)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {PYTHON}: {e}; install Debian's python3 with python3-pylibmc \
                 python3-pymemcache python3-memcache python3-django (cargo xtask test does)"
            )
        });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        stdout.read_to_end(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        stderr.read_to_end(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + PYTHON_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} did not finish within {PYTHON_TIMEOUT:?}",
                script.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = String::from_utf8(out.join().unwrap().expect("read python's stdout"))
        .expect("python's output is UTF-8");
    let err =
        String::from_utf8_lossy(&err.join().unwrap().expect("read python's stderr")).into_owned();
    let missing: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("MISSING\t"))
        .map(|l| l.replace('\t', ": "))
        .collect();
    assert!(
        missing.is_empty(),
        "{PYTHON} lacks Python clients the matrix reads with; install Debian's packages \
         (`apt-get install python3-pylibmc python3-pymemcache python3-memcache python3-django`, \
         or `cargo xtask test` as root):\n  {}",
        missing.join("\n  ")
    );
    assert!(
        status.success(),
        "{} failed ({status}):\n{err}",
        script.display()
    );
    let mut python = Python {
        versions: String::new(),
        own_none_default: BTreeMap::new(),
        own_bool: BTreeMap::new(),
        zlib: Vec::new(),
        flags: HashMap::new(),
        cells: HashMap::new(),
    };
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["VERSIONS", v] => python.versions = v.to_string(),
            ["CONTROL", reader, flag] => {
                python
                    .own_none_default
                    .insert(reader.to_string(), *flag == "1");
            }
            ["OWNBOOL", reader, repr] => {
                python.own_bool.insert(reader.to_string(), repr.to_string());
            }
            ["ZLIB", what, flags, reader, class, label, detail] => {
                python.zlib.push(ZlibControl {
                    what: what.to_string(),
                    flags: parse_flags(flags),
                    reader: reader.to_string(),
                    cell: parse_class(class, label, detail, line),
                });
            }
            ["FLAGS", case, flags] => {
                if let Some(flags) = parse_flags(flags) {
                    python.flags.insert(case.parse().expect("case id"), flags);
                }
            }
            ["CELL", case, reader, class, label, detail] => {
                let cell = parse_class(class, label, detail, line);
                python
                    .cells
                    .insert((case.parse().expect("case id"), reader.to_string()), cell);
            }
            _ => panic!("unexpected line from {}: {line:?}", script.display()),
        }
    }
    python
}

// ---- rendering ----

/// A set of one dimension for the table; with `star`, `*` when it is every one `all` has,
/// `* but x,y` when it lacks only a few.
fn set_label<T: Copy + Ord>(
    set: &BTreeSet<T>,
    all: impl IntoIterator<Item = T>,
    star: bool,
    label: fn(T) -> &'static str,
) -> String {
    let all: BTreeSet<T> = all.into_iter().collect();
    let list = |set: &BTreeSet<T>| set.iter().map(|&x| label(x)).collect::<Vec<_>>().join(",");
    let rest: BTreeSet<T> = all.difference(set).copied().collect();
    if !star || all.len() < 2 {
        list(set)
    } else if rest.is_empty() {
        "*".into()
    } else if set.is_subset(&all) && rest.len() * 2 < set.len() {
        format!("* but {}", list(&rest))
    } else {
        list(set)
    }
}

/// Adds `v` to the set under `k`, keeping keys in order of first appearance.
fn push<K: PartialEq, V: Ord>(map: &mut Vec<(K, BTreeSet<V>)>, k: K, v: V) {
    match map.iter_mut().find(|(key, _)| *key == k) {
        Some((_, set)) => {
            set.insert(v);
        }
        None => map.push((k, BTreeSet::from([v]))),
    }
}

/// `transport / herd / codec` products covering exactly `group`; with `star`, `*` stands for
/// every one `universe` has with the rest of the product (every herd tested on that
/// transport, say). Deterministic: sets in enum order, products in order of first appearance.
fn describe(group: &[Writer], universe: &[Writer], star: bool) -> String {
    // (transport, herd) -> codecs; (transport, codecs) -> herds; (herds, codecs) -> transports,
    // merging by label so that `*` herds on text (with meta) and on libmemcached (without)
    // share a row.
    let mut codecs = Vec::new();
    for w in group {
        push(&mut codecs, (w.transport, w.herd), w.codec);
    }
    let mut herds = Vec::new();
    for ((t, h), cs) in codecs {
        let tested = universe
            .iter()
            .filter(|w| w.transport == t && w.herd == h)
            .map(|w| w.codec);
        push(
            &mut herds,
            (t, set_label(&cs, tested, star, Codec::label)),
            h,
        );
    }
    let mut transports = Vec::new();
    for ((t, c), hs) in herds {
        let tested = universe.iter().filter(|w| w.transport == t).map(|w| w.herd);
        push(
            &mut transports,
            (set_label(&hs, tested, star, Herd::label), c),
            t,
        );
    }
    transports
        .into_iter()
        .map(|((h, c), ts)| {
            let tested = universe.iter().map(|w| w.transport);
            format!(
                "{} / {h} / {c}",
                set_label(&ts, tested, star, Transport::label)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One table: a row per value and distinct outcome (the writers it holds for named in the
/// second column), a column per reader.
fn render_table(
    out: &mut String,
    writers: &[Writer],
    subset: &[usize],
    values: &[Value],
    cell: &dyn Fn(usize, usize, usize) -> Cell,
    star: bool,
) {
    out.push_str("| value | written by (transport / herd / codec) |");
    for r in &READERS {
        let _ = write!(out, " {} |", r.header);
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(READERS.len()));
    out.push('\n');
    let universe: Vec<Writer> = subset.iter().map(|&w| writers[w]).collect();
    for (v, value) in values.iter().enumerate() {
        let mut groups: Vec<(Vec<String>, Vec<Writer>)> = Vec::new();
        for &w in subset {
            let row: Vec<String> = (0..READERS.len()).map(|r| cell(w, v, r).render()).collect();
            match groups.iter_mut().find(|(outcome, _)| *outcome == row) {
                Some((_, ws)) => ws.push(writers[w]),
                None => groups.push((row, vec![writers[w]])),
            }
        }
        for (row, ws) in groups {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                value.rust,
                describe(&ws, &universe, star),
                row.join(" | ")
            );
        }
    }
}

/// The readers' own values, read back in the same run: what the ✓† and zlib exemptions rest
/// on, and how each reader reads its own `True`.
fn render_controls(out: &mut String, python: &Python) {
    out.push_str("\n### Controls (each reader's own values, read back in the same run)\n\n| stored by | value |");
    for r in &READERS {
        let _ = write!(out, " {} |", r.header);
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(READERS.len()));
    out.push('\n');
    let row = |out: &mut String, by: &str, value: &str, cell: &dyn Fn(&Reader) -> String| {
        let cells: Vec<String> = READERS.iter().map(cell).collect();
        let _ = writeln!(out, "| {by} | {value} | {} |", cells.join(" | "));
    };
    let itself = "the reader (django-newcache: `herd=False`, stored bare)";
    row(
        out,
        itself,
        "`None`",
        &|r| match python.own_none_default.get(r.id) {
            Some(true) => "the default".into(),
            Some(false) => "`None`".into(),
            None => "?".into(),
        },
    );
    row(out, itself, "`True`", &|r| {
        python
            .own_bool
            .get(r.id)
            .map_or("?".into(), |v| format!("`{v}`"))
    });
    let mut whats: Vec<(&str, Option<u32>)> = Vec::new();
    for c in &python.zlib {
        if !whats.iter().any(|(w, _)| *w == c.what) {
            whats.push((&c.what, c.flags));
        }
    }
    for (what, flags) in whats {
        let value = match what {
            "bytes" => "`bytes(i % 251 for i in range(204800))`",
            "list" => "`['item-0', 'item-1', ..., 'item-1999']`",
            other => other,
        };
        let flags = flags.map_or("?".to_string(), |f| f.to_string());
        row(
            out,
            &format!("pylibmc, `min_compress_len=1024` (flags {flags})"),
            value,
            &|r| {
                python
                    .zlib
                    .iter()
                    .find(|c| c.what == what && c.reader == r.id)
                    .map_or("?".into(), |c| c.cell.render())
            },
        );
    }
}

// ---- the test ----

#[test]
fn every_python_reader_reads_every_value_newcache_writes_or_raises() {
    let started = Instant::now();
    let server = Memcached::start();
    let addr = server.addr();
    let values = values();
    let mut writers = Writer::matrix();
    let matrix: Vec<usize> = (0..writers.len()).collect();
    writers.extend(Writer::defaults());
    let defaults: Vec<usize> = (matrix.len()..writers.len()).collect();

    // Write everything.
    let mut cases = Vec::new();
    let mut unbuilt = Vec::new();
    let mut pickle_unbuilt = false;
    for (w, writer) in writers.iter().enumerate() {
        let url = writer.url(&addr);
        let cache = match Cache::from_url(&url) {
            Ok(cache) => cache,
            Err(e) => {
                unbuilt.push(format!(
                    "{}: Cache::from_url({url:?}) failed: {e}",
                    writer.label()
                ));
                pickle_unbuilt |= writer.codec == Codec::Pickle;
                for v in 0..values.len() {
                    cases.push(Case {
                        writer: w,
                        value: v,
                        stored: Err(format!("writer not built: {e}")),
                    });
                }
                continue;
            }
        };
        for (v, value) in values.iter().enumerate() {
            let key = format!("v{v}");
            let stored = (value.write)(&cache, &key, writer.herd.options())
                .map_err(|e| format!("set failed: {e}"))
                .and_then(|()| {
                    let wire = cache.wire_key(&key).map_err(|e| format!("wire_key: {e}"))?;
                    String::from_utf8(wire).map_err(|e| format!("wire key not UTF-8: {e}"))
                });
            cases.push(Case {
                writer: w,
                value: v,
                stored,
            });
        }
    }

    // Read everything, in one Python process.
    let dir = std::env::temp_dir().join(format!("newcache-python-matrix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // django-newcache's herd marker, importable as `newcache.Marker` by every reader.
    std::fs::write(
        dir.join("newcache.py"),
        "class Marker(object):\n    \"\"\"django-newcache's herd marker.\"\"\"\n",
    )
    .unwrap();
    let mut spec = format!(
        "{{'addr': {}, 'marker_dir': {}, 'values': [\n",
        Py::str(&addr).literal(),
        Py::str(dir.to_str().unwrap()).literal()
    );
    for value in &values {
        spec.push_str(&value.python.literal());
        spec.push_str(",\n");
    }
    spec.push_str("], 'cases': [\n");
    for (id, case) in cases.iter().enumerate() {
        if let Ok(key) = &case.stored {
            let _ = writeln!(spec, "({id}, {}, {}),", case.value, Py::str(key).literal());
        }
    }
    spec.push_str("]}\n");
    let spec_path = dir.join("spec.py");
    std::fs::write(&spec_path, spec).unwrap();
    let python = run_python(&spec_path);
    let _ = std::fs::remove_dir_all(&dir);

    // Every cell, by (writer, value, reader).
    let mut by_index: HashMap<(usize, usize), usize> = HashMap::new();
    for (id, case) in cases.iter().enumerate() {
        by_index.insert((case.writer, case.value), id);
    }
    let zlib_unsupported = python.zlib_unsupported();
    let cell = |w: usize, v: usize, r: usize| -> Cell {
        let id = by_index[&(w, v)];
        let exempt = !held_to_the_rule(
            writers[w],
            &READERS[r],
            python.flags.get(&id).copied(),
            &zlib_unsupported,
        );
        match &cases[id].stored {
            Err(why) => Cell {
                class: Class::Unwritten,
                label: String::new(),
                detail: why.clone(),
                exempt,
            },
            Ok(_) => python
                .cells
                .get(&(id, READERS[r].id.to_string()))
                .map(|c| Cell {
                    exempt,
                    ..c.clone()
                })
                .unwrap_or_else(|| {
                    panic!(
                        "matrix_reader.py printed no cell for case {id} ({} / {}) and reader {}",
                        writers[w].label(),
                        values[v].rust,
                        READERS[r].id
                    )
                }),
        }
    };

    // The markdown.
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Generated by `tests/tests/python_matrix.rs`; regenerate with `{BLESS}`."
    );
    let _ = writeln!(md, "Read by {}.", python.versions);
    md.push('\n');
    md.push_str("Cells: ✓ the same value, as the natural Python type · ✗ `Type` raises that exception · miss: the default / `None` for a stored value · WRONG `type`: returned something else (of that type) · — nothing stored (the writer could not be built or `set` failed).\n");
    let own_none: Vec<&str> = READERS
        .iter()
        .filter(|r| python.own_none_default.get(r.id) == Some(&true))
        .map(|r| r.header)
        .collect();
    if !own_none.is_empty() {
        let _ = writeln!(
            md,
            "✓† a stored `None` reads as the default, exactly as a `None` the reader stored itself does ({}; see the controls).",
            own_none.join(", ")
        );
    }
    md.push_str("In parentheses, (WRONG ...) or (miss): a cell that does not fail the test. Under `envelope=django-newcache` (`dn-envelope`), every reader but django-newcache: the format is django-newcache's herd tuple, for clusters read by django-newcache, and other readers get the tuple by design.");
    let no_zlib = READERS
        .iter()
        .filter(|r| NO_ZLIB_READERS.contains(&r.id) && zlib_unsupported.contains(r.id))
        .map(|r| r.header)
        .collect::<Vec<_>>();
    if no_zlib.is_empty() {
        md.push('\n');
    } else {
        let _ = writeln!(
            md,
            " Under `compress_threshold=1024` (`zlib`), {} on items stored compressed (flag 8): they read pylibmc's own compressed values wrongly too (see the controls), having no zlib support.",
            no_zlib.join(" and ")
        );
    }
    md.push_str("Writers: `transport / herd / codec`; `*` is every one tested with the rest of the product, `* but x` all of them except x.\n\n");
    md.push_str(
        "### Values\n\n| # | Rust value | natural Python value | promise |\n|---|---|---|---|\n",
    );
    for (v, value) in values.iter().enumerate() {
        let py = match value.python_doc {
            Some(doc) => doc.to_string(),
            None => value.python.literal(),
        };
        let _ = writeln!(
            md,
            "| {v} | `{}` | `{py}` | {} |",
            value.rust,
            if value.kind == Kind::Other { "" } else { "yes" }
        );
    }
    md.push_str("\n### Counts (the full matrix, every writer x value)\n\n| reader | same | raises | miss | WRONG | not stored | (WRONG or miss, exempt) |\n|---|---|---|---|---|---|---|\n");
    // Per reader: class -> cells held to the rule, and the WRONG/miss ones that are not.
    let mut counts: Vec<(BTreeMap<Class, usize>, usize)> =
        vec![(BTreeMap::new(), 0); READERS.len()];
    for &w in &matrix {
        for v in 0..values.len() {
            for (r, (held, by_design)) in counts.iter_mut().enumerate() {
                let c = cell(w, v, r);
                if c.silently_wrong_by_design() {
                    *by_design += 1;
                } else {
                    *held.entry(c.class).or_default() += 1;
                }
            }
        }
    }
    for (r, (held, by_design)) in counts.iter().enumerate() {
        let n = |class| held.get(&class).copied().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {by_design} |",
            READERS[r].header,
            n(Class::Same),
            n(Class::Raises),
            n(Class::Miss),
            n(Class::Wrong),
            n(Class::Unwritten)
        );
    }
    render_controls(&mut md, &python);
    md.push_str("\n### Default settings (no `herd=` or `codec=`)\n\n");
    render_table(&mut md, &writers, &defaults, &values, &cell, false);
    md.push_str("\n### The full matrix\n\n");
    render_table(&mut md, &writers, &matrix, &values, &cell, true);

    // What fails the test.
    let mut problems = Vec::new();
    if !unbuilt.is_empty() {
        let hint = if pickle_unbuilt {
            "\n(the pickle codec needs newcache's `pickle` feature, and tests/Cargo.toml a \
             `pickle = [\"newcache/pickle\"]` feature so that --all-features turns it on)"
        } else {
            ""
        };
        problems.push(format!(
            "writers that could not be built ({}):\n  {}{hint}",
            unbuilt.len(),
            unbuilt.join("\n  ")
        ));
    }
    let unstored: Vec<String> = cases
        .iter()
        .filter(|c| {
            !c.stored
                .as_ref()
                .is_err_and(|e| e.starts_with("writer not built"))
        })
        .filter_map(|c| {
            c.stored.as_ref().err().map(|e| {
                format!(
                    "{} `{}`: {e}",
                    writers[c.writer].label(),
                    values[c.value].rust
                )
            })
        })
        .collect();
    if !unstored.is_empty() {
        problems.push(format!(
            "values not stored ({}):\n  {}",
            unstored.len(),
            unstored.join("\n  ")
        ));
    }
    let mut promise = Vec::new();
    for &w in &defaults {
        for (v, value) in values.iter().enumerate() {
            if value.kind == Kind::Other {
                continue;
            }
            for (r, reader) in READERS.iter().enumerate() {
                let c = cell(w, v, r);
                if reader.promise && c.class != Class::Same {
                    promise.push(format!(
                        "{} `{}` -> {}: {:?} {}",
                        writers[w].label(),
                        value.rust,
                        reader.header,
                        c.class,
                        c.detail
                    ));
                }
            }
        }
    }
    if !promise.is_empty() {
        problems.push(format!(
            "the default-settings promise (str, int, bool, bytes read as the same value by pylibmc, pylibmc binary, pymemcache, PyLibMCCache, PyMemcacheCache) is broken in {} cells:\n  {}",
            promise.len(),
            promise.join("\n  ")
        ));
    }
    let mut silent = Vec::new();
    for (w, writer) in writers.iter().enumerate() {
        for (v, value) in values.iter().enumerate() {
            for (r, reader) in READERS.iter().enumerate() {
                let c = cell(w, v, r);
                if c.silently_wrong() {
                    let flags = python
                        .flags
                        .get(&by_index[&(w, v)])
                        .map_or("?".to_string(), |f| format!("{f:#x}"));
                    silent.push(format!(
                        "{} `{}` (flags {flags}) -> {}: {} {}",
                        writer.label(),
                        value.rust,
                        reader.header,
                        if c.class == Class::Wrong {
                            "WRONG"
                        } else {
                            "miss"
                        },
                        c.detail
                    ));
                }
            }
        }
    }
    if !silent.is_empty() {
        problems.push(format!(
            "silently wrong cells ({}: a Python reader returned another value, or nothing, for a stored value):\n  {}",
            silent.len(),
            silent.join("\n  ")
        ));
    }
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/python-interop.md");
    if let Some(problem) = check_doc(&doc, &md) {
        problems.push(problem);
    }
    eprintln!(
        "python_matrix: {} writers x {} values x {} readers in {:.1?}",
        writers.len(),
        values.len(),
        READERS.len(),
        started.elapsed()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Compares the matrix section of `doc` with `md`; rewrites it under `NEWCACHE_BLESS=1`.
fn check_doc(doc: &Path, md: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(doc).unwrap_or_else(|e| panic!("read {}: {e}", doc.display()));
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        panic!("{} has no {BEGIN} ... {END} section", doc.display());
    };
    let start = begin + BEGIN.len();
    let current = text[start..end].trim_matches('\n');
    let now = md.trim_matches('\n');
    if current == now {
        return None;
    }
    if std::env::var_os("NEWCACHE_BLESS").is_some_and(|v| v == "1") {
        let updated = format!("{}\n{now}\n{}", &text[..start], &text[end..]);
        std::fs::write(doc, updated).unwrap_or_else(|e| panic!("write {}: {e}", doc.display()));
        eprintln!("python_matrix: rewrote the matrix in {}", doc.display());
        return None;
    }
    let old: Vec<&str> = current.lines().collect();
    let new: Vec<&str> = now.lines().collect();
    let mut diff = Vec::new();
    for i in 0..old.len().max(new.len()) {
        let (a, b) = (old.get(i), new.get(i));
        if a != b {
            diff.push(format!(
                "  line {}:\n    doc: {}\n    now: {}",
                i + 1,
                a.unwrap_or(&"(none)"),
                b.unwrap_or(&"(none)")
            ));
            if diff.len() == 10 {
                diff.push("  ...".into());
                break;
            }
        }
    }
    Some(format!(
        "the matrix in {} is out of date ({} lines there, {} now); first differences inside the matrix section:\n{}\nregenerate it with `{BLESS}`",
        doc.display(),
        old.len(),
        new.len(),
        diff.join("\n")
    ))
}
