//! The matrix as markdown, as docs/python-interop.md shows it.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::cells::{Cell, Python};
use super::readers::{Reader, READERS};
use super::values::Value;
use super::writers::{Codec, Herd, Transport, Writer};

/// A set of one dimension for the table; with `star`, `*` when it is every one `all` has,
/// `* but x,y` when it lacks only a few.
pub(super) fn set_label<T: Copy + Ord>(
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
pub(super) fn push<K: PartialEq, V: Ord>(map: &mut Vec<(K, BTreeSet<V>)>, k: K, v: V) {
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
pub(super) fn describe(group: &[Writer], universe: &[Writer], star: bool) -> String {
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
pub(super) fn render_table(
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
pub(super) fn render_controls(out: &mut String, python: &Python) {
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
