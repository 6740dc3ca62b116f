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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use newcache::Cache;
use newcache_testkit::Memcached;

mod cells;
mod readers;
mod render;
mod values;
mod writers;

use cells::{held_to_the_rule, run_python, Case, Cell, Class, NO_ZLIB_READERS};
use readers::READERS;
use render::{render_controls, render_table};
use values::{values, Kind, Py};
use writers::{Codec, Writer};

const PYTHON: &str = "/usr/bin/python3";
const PYTHON_TIMEOUT: Duration = Duration::from_secs(120);
const BEGIN: &str = "<!-- matrix:begin -->";
const END: &str = "<!-- matrix:end -->";
const BLESS: &str =
    "NEWCACHE_BLESS=1 cargo test -p newcache-tests --all-features --test cache python_matrix";

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
