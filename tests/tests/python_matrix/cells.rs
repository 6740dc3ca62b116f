//! What each reader made of each value (a cell), read from the Python run's output.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::readers::Reader;
use super::writers::{Herd, Writer};
use super::{PYTHON, PYTHON_TIMEOUT};

/// The readers whose zlib support the compression writer's exemption is about: pymemcache
/// 3.5.2's `pickle_serde` (Django's `PyMemcacheCache` uses it) has none.
pub(super) const NO_ZLIB_READERS: [&str; 2] = ["pymemcache", "django_pymemcache"];

/// The zlib flag (pylibmc's `min_compress_len`, newcache's `compress_threshold`).
pub(super) const FLAG_ZLIB: u32 = 8;

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
pub(super) fn held_to_the_rule(
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
pub(super) enum Class {
    Same,
    Raises,
    Miss,
    Wrong,
    /// The writer could not be built or the value not stored: nothing to read.
    Unwritten,
}

impl Class {
    pub(super) fn parse(s: &str) -> Option<Class> {
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
pub(super) struct Cell {
    pub(super) class: Class,
    pub(super) label: String,
    pub(super) detail: String,
    /// Not held to the rule ([`held_to_the_rule`]).
    pub(super) exempt: bool,
}

impl Cell {
    /// What the table shows: no timestamps or values, so the same format renders the same.
    pub(super) fn render(&self) -> String {
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
    pub(super) fn silently_wrong(&self) -> bool {
        matches!(self.class, Class::Wrong | Class::Miss) && !self.exempt
    }

    /// WRONG or miss where the writer's format is meant for other readers.
    pub(super) fn silently_wrong_by_design(&self) -> bool {
        matches!(self.class, Class::Wrong | Class::Miss) && self.exempt
    }
}

/// One stored (or attempted) value: a writer and a value, and where it went.
pub(super) struct Case {
    pub(super) writer: usize,
    pub(super) value: usize,
    /// The wire key, or why nothing was stored.
    pub(super) stored: Result<String, String>,
}

/// pylibmc's own zlib-compressed value (`min_compress_len`), read back by one reader.
pub(super) struct ZlibControl {
    /// `bytes` or `list`.
    pub(super) what: String,
    /// The flags pylibmc stored it with.
    pub(super) flags: Option<u32>,
    pub(super) reader: String,
    pub(super) cell: Cell,
}

pub(super) struct Python {
    pub(super) versions: String,
    /// Per reader id: does it read a `None` it stored itself as its default?
    pub(super) own_none_default: BTreeMap<String, bool>,
    /// Per reader id: the repr of a `True` it stored itself and read back.
    pub(super) own_bool: BTreeMap<String, String>,
    pub(super) zlib: Vec<ZlibControl>,
    /// Per case id: the item's flags.
    pub(super) flags: HashMap<usize, u32>,
    pub(super) cells: HashMap<(usize, String), Cell>,
}

impl Python {
    /// The readers that read both of pylibmc's own compressed values (stored with the zlib
    /// flag) as WRONG or miss: they do not support zlib.
    pub(super) fn zlib_unsupported(&self) -> BTreeSet<String> {
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

pub(super) fn parse_class(class: &str, label: &str, detail: &str, line: &str) -> Cell {
    Cell {
        class: Class::parse(class)
            .unwrap_or_else(|| panic!("python printed an unknown class: {line}")),
        label: label.to_string(),
        detail: detail.to_string(),
        exempt: false,
    }
}

pub(super) fn parse_flags(flags: &str) -> Option<u32> {
    flags.parse().ok()
}

pub(super) fn run_python(spec: &Path) -> Python {
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
