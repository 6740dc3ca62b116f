//! The targets table, and why each missed target was missed, from the run's own rows.

use std::fmt::Write as _;

use super::machine::duration;
use super::results::{mean_ns, speedup, Report};
use super::sections::Interleaved;
use super::{BASELINE, BASELINE_BINARY, FLOOR};
use newcache_benches::clients::{VALUE_PATH, VALUE_PATH_ALLOCATIONS, VALUE_PATH_TARGET};

/// The targets, checked against this run (`allocations`: the allocations TSV).
/// Every ratio is the interleaved bench's where it measured the pair, else criterion's
/// [`speedup`] (the median of the ratios within each repeated run).
pub(super) fn targets(r: &mut Report, allocations: &str, inter: &Interleaved) {
    const WIRE: &str = "libmemcached-sys-text-facade-wire-bytes";
    let vs = |g: &str, a: &str, b: &str| {
        inter
            .ratio(g, a, b)
            .map(|[p50, _, _]| p50)
            .or_else(|| speedup(&r.dir, (g, a), (g, b)))
    };
    // (shown, met); `None` when a side was not measured.
    let check = |x: Option<f64>, at_least: f64| {
        x.map(|x| {
            let verdict = if x >= at_least { "met" } else { "missed" };
            (format!("{x:.2}x: {verdict}"), x >= at_least)
        })
    };
    let cell = |c: &Option<(String, bool)>| {
        c.as_ref()
            .map_or("not measured".to_string(), |(s, _)| s.clone())
    };
    let missed = |c: &Option<(String, bool)>| matches!(c, Some((_, false)));
    let hit = check(vs("get_hit", "newcache-text", BASELINE), 1.0);
    let set = check(vs("set_100B", "newcache-text", BASELINE), 1.0);
    let many = check(vs("get_many_100", "newcache-text", BASELINE), 1.0);
    let floor = check(vs("get_hit", "newcache-text", FLOOR), 0.9);
    let binary: Vec<(&str, Option<(String, bool)>)> = ["get_hit", "set_100B"]
        .into_iter()
        .map(|g| {
            (
                g,
                check(vs(g, "newcache-libmemcached-binary", BASELINE_BINARY), 0.95),
            )
        })
        .collect();
    let overhead = ["set_100B", "get_100B"]
        .iter()
        .map(|op| {
            mean_ns(&r.dir, "facade_overhead", op).map_or(format!("{op} not measured"), |ns| {
                let verdict = if ns < 500.0 { "met" } else { "missed" };
                format!("{op} {ns:.0} ns: {verdict}")
            })
        })
        .collect::<Vec<_>>()
        .join("; ");
    let allocs = |case: &str| {
        allocations.lines().find_map(|l| {
            let mut f = l.split('\t');
            (f.next() == Some(case))
                .then(|| f.next()?.parse::<f64>().ok())
                .flatten()
        })
    };
    // The returned value itself is one allocation; anything more is beyond it.
    let alloc_cells: Vec<String> = [
        (
            "TextTransport::get hit, 100 B",
            "text transport get hit",
            1.0,
        ),
        ("Cache::get_raw hit, 100 B", "`Cache::get_raw` hit", 1.0),
        (
            "Cache::get::<String> hit, 100 B",
            "`Cache::get::<String>` hit",
            1.0,
        ),
        ("Cache::get::<String> miss", "miss", 0.0),
    ]
    .iter()
    .map(|(case, label, allowed)| match allocs(case) {
        Some(n) => {
            let verdict = if n <= *allowed { "met" } else { "missed" };
            format!("{label} {n:.0}: {verdict}")
        }
        None => format!("{label} not measured"),
    })
    .collect();
    // The value path: each facade row over the transport alone beneath it, interleaved
    // only (criterion's rows do not carry the same keys and flags).
    /// A target checked: (shown, met), `None` when not measured.
    type Checked = Option<(String, bool)>;
    let value_path: Vec<(&str, &str, &str, Checked)> = VALUE_PATH
        .iter()
        .map(|(op, facade, transport)| {
            let x = inter.ratio(op, facade, transport).map(|[p50, _, _]| p50);
            (*op, *facade, *transport, check(x, VALUE_PATH_TARGET))
        })
        .collect();
    let value_rows: String = value_path
        .iter()
        .map(|(op, facade, transport, c)| {
            let alloc = VALUE_PATH_ALLOCATIONS
                .iter()
                .filter(|(what, _, _, _)| {
                    (*op == "set_get_100KB") == what.starts_with("set+get")
                })
                .find_map(|(_, _, cases, alone)| {
                    let suffix = if facade.ends_with("-vec") {
                        "<Vec<u8>>"
                    } else {
                        "<String>"
                    };
                    let binary = facade.contains("libmemcached");
                    let case = cases
                        .iter()
                        .find(|c| {
                            c.contains(suffix)
                                && c.contains("(binary)") == binary
                                && c.contains("(identity keys)") == facade.ends_with("-identity")
                        })?;
                    Some(format!(
                        "; allocations per call {} against {}",
                        allocs(case).map_or("-".into(), |n| format!("{n:.0}")),
                        allocs(alone).map_or("-".into(), |n| format!("{n:.0}"))
                    ))
                })
                .unwrap_or_default();
            format!(
                "| the value path: `{facade}` >= {VALUE_PATH_TARGET:.2}x `{transport}`, {op} | {}{alloc} |\n",
                cell(c)
            )
        })
        .collect();
    // get_many(100) against raw libmemcached, on both caches (issue 12 item 8).
    // The identity rows read the raw clients' own keys through a key function that returns
    // them as they are: the short-key target with no key function's cost.
    let many_rows: String = [("newcache-text", "`Cache`"), ("newcache-async", "`AsyncCache`")]
        .iter()
        .flat_map(|(client, shown)| {
            [
                (*client, *shown, WIRE, 1.0, "reading the same wire keys and items"),
                (*client, *shown, BASELINE, 0.9, "reading its own short keys"),
            ]
        })
        .chain([
            (
                "newcache-text-identity",
                "`Cache` through an identity key function",
                BASELINE,
                0.9,
                "on the same short keys",
            ),
            (
                "newcache-async-identity",
                "`AsyncCache` through an identity key function",
                BASELINE,
                0.9,
                "on the same short keys",
            ),
        ])
        .map(|(client, shown, against, at_least, what)| {
            format!(
                "| get_many(100): {shown} (text) >= {at_least:.1}x raw libmemcached text {what} (`{against}`) | {} |\n",
                cell(&check(vs("get_many_100", client, against), at_least))
            )
        })
        .collect();
    let _ = writeln!(
        r.md,
        "## Targets, this run\n\nRatios from *Ratios, interleaved* where it measured the pair, else from the criterion tables (medians of the ratios within each repeated run).\n\n| target | result |\n|---|---|\n| text facade >= 1.0x raw libmemcached text, get hit | {} |\n| text facade >= 1.0x raw libmemcached text, set 100 B | {} |\n| text facade >= 1.0x raw libmemcached text, get_many(100) | {} |\n| text facade >= 0.9x the loopback floor, get hit | {} |\n| binary facade within 5% of raw libmemcached binary | {} |\n| key function + herd flags + codec < 0.5 µs | {overhead} |\n| no allocation on the get path beyond the returned value (allocations per call, *Heap allocations per call*) | {} |\n{value_rows}{many_rows}{}",
        cell(&hit),
        cell(&set),
        cell(&many),
        cell(&floor),
        binary
            .iter()
            .map(|(g, c)| format!("{g} {}", cell(c)))
            .collect::<Vec<_>>()
            .join("; "),
        alloc_cells.join("; "),
        r.targets
    );

    // Why each missed target was missed, from this run's own rows.
    let mut why: Vec<String> = Vec::new();
    let x = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}x"));
    if missed(&many) {
        why.push(format!(
            "**get_many(100) through the facade.** The facade's wire work is larger than raw libmemcached's: 100 hashed keys of 43 bytes (`-1-` and 40 hex digits: version 1, no flavor) against keys of 10 or 11 bytes (`raw-many-N`); the values are the same 100 bytes (stored bare, the herd state in the flags). Raw libmemcached reading exactly the facade's keys and items (`{WIRE}`) ran at {} of its own short-key multi-get in this run: that is the price of hashed keys at the server and on the wire, which no client can avoid with the same key function. Against that same-bytes row the facade ran at {}, and at {} of the text transport alone reading the same keys (`transport-text-facade-wire-bytes`); the text transport alone, on the short keys, at {} of raw libmemcached. The facade's own work per key is the SHA-1 key function and its hex digits (*Key functions*), reading the herd state from the flags, and the returned `GetMany`: the keys asked copied into one `String`, hashed (foldhash) and indexed while memcached answers (`MadeKeys::sent`), no allocation per key (the value itself is the transport's buffer, handed over; *Heap allocations per call*), so what stays after the reply is putting each value in its key's entry. `get_many_ordered` returns the values in the caller's key order with no map (*Value path*, `newcache-text-ordered`). Every key is hashed before the request goes out, whole, as the transport alone sends it: in two halves, the second hashed while memcached answered the first, it lost a fifth on a quiet 2-vCPU VM, where the second request's wake-ups cost more than the half of SHA-1 it hid (`crates/transport-text/src/multi_get.rs`). Through an identity key function (`newcache-text-identity`: the raw clients' own short keys, no SHA-1 at all) the facade ran at {} of raw libmemcached and at {} of the text transport alone on those keys, so a cheaper key function would not close it: what is left is the facade's work per value (*The value path*).",
            x(vs("get_many_100", WIRE, BASELINE)),
            x(vs("get_many_100", "newcache-text", WIRE)),
            x(vs(
                "get_many_100",
                "newcache-text",
                "transport-text-facade-wire-bytes"
            )),
            x(vs("get_many_100", "transport-text", BASELINE)),
            x(vs("get_many_100", "newcache-text-identity", BASELINE)),
            x(vs("get_many_100", "newcache-text-identity", "transport-text")),
        ));
    }
    let async_many = check(vs("get_many_100", "newcache-async", WIRE), 1.0);
    if missed(&async_many) {
        why.push(format!(
            "**get_many(100) through `AsyncCache`.** It ran at {} of raw libmemcached reading the same wire keys, where the blocking `Cache` ran at {}, and through an identity key function at {} of raw libmemcached's short-key multi-get (`Cache`: {}). Both caches hash every key before the request goes out whole (it went in two parts once, the second hashed while memcached answered the first; each part's reply came in a wake-up of its own, slower on both: `crates/transport-text/src/multi_get.rs`); what `AsyncCache` pays beyond the blocking `Cache` is its wait for the reply, the runtime's (`epoll_wait` and a wake-up) rather than a blocking read. Split by layer on the raw clients' short keys, in the same rounds: the async text transport alone (`transport-tokio`) ran at {} of the blocking text transport alone (`transport-text`), and `AsyncCache` through an identity key function at {} of the async transport alone, where the blocking `Cache` through it ran at {} of the blocking transport: the async facade's own work per call (the list of the made keys' slices, and the keys and request copied into the connection's job before anything is written, *Heap allocations per call*) and the async transport's each cost a part.",
            x(vs("get_many_100", "newcache-async", WIRE)),
            x(vs("get_many_100", "newcache-text", WIRE)),
            x(vs("get_many_100", "newcache-async-identity", BASELINE)),
            x(vs("get_many_100", "newcache-text-identity", BASELINE)),
            x(vs("get_many_100", "transport-tokio", "transport-text")),
            x(vs("get_many_100", "newcache-async-identity", "transport-tokio")),
            x(vs("get_many_100", "newcache-text-identity", "transport-text")),
        ));
    }
    for (name, c, g) in [
        ("get hit", &hit, "get_hit"),
        ("set 100 B", &set, "set_100B"),
    ] {
        if missed(c) {
            why.push(format!(
                "**{name} through the text facade.** The text transport alone ran at {} of raw libmemcached here{}. The facade's CPU work per operation is under 0.2 µs (*Key function + herd flags + codec*) against a round trip of about 25 µs, and both make the same two system calls per operation (*System calls per operation*), so a gap of more than about 1% is the machine's noise landing on this row, or the larger request (the hashed key) at the server.",
                x(vs(g, "transport-text", BASELINE)),
                if g == "set_100B" {
                    format!(
                        ", and raw libmemcached storing exactly the facade's key and bytes (`{WIRE}`) at {} of its own short-key set",
                        x(vs(g, WIRE, BASELINE))
                    )
                } else {
                    String::new()
                }
            ));
        }
    }
    if missed(&floor) {
        why.push(format!(
            "**get hit vs the loopback floor.** The floor (`{FLOOR}`) is one raw `mn` ping-pong; a get also carries its key and its 100-byte value both ways. The text transport alone ran at {} of the floor.",
            x(vs("get_hit", "transport-text", FLOOR))
        ));
    }
    for (g, c) in &binary {
        if missed(c) {
            why.push(format!(
                "**binary facade vs raw libmemcached binary, {g}.** Our libmemcached wrapper without the facade (`wrapper-libmemcached-binary`) ran at {} of raw libmemcached binary. The wrapper borrows a handle from the pool (a mutex) and checks the key; a get is one `memcached_get` like the raw row's (one `GETK` write, whose CAS it reads from the handle's own result) and copies the value out of libmemcached's buffer into an `Item`, a set one `memcached_set`. The facade adds its key function, herd flags and codec (under 0.2 µs) and its longer (hashed) key on the wire.",
                x(vs(g, "wrapper-libmemcached-binary", BASELINE_BINARY))
            ));
        }
    }
    // The value path, from this run's own rows: the transport's time per operation, the
    // codec's time per 100 KB, the key function's per key.
    let micro = |group: &str, bench: &str| mean_ns(&r.dir, group, bench).map(duration);
    let shown = |v: Option<String>| v.unwrap_or_else(|| "(not measured)".to_string());
    // Nanoseconds per `per` operations of `client`, from its interleaved rate.
    let ns_per = |op: &str, client: &str, per: f64| {
        inter
            .clients(op)
            .into_iter()
            .find(|(c, _)| c == client)
            .map(|(_, ops)| per * 1e9 / ops)
    };
    let per_op = |op: &str, client: &str, per: f64| ns_per(op, client, per).map(duration);
    for (op, facade, transport, c) in &value_path {
        if !missed(c) {
            continue;
        }
        let ratio = c.as_ref().map_or(String::new(), |(s, _)| s.clone());
        if *op == "set_get_100KB" && facade.ends_with("-vec") {
            why.push(format!(
                "**set+get of 100 KB as a `Vec<u8>`, `{facade}` over `{transport}` ({ratio}).** serde hands a `Vec<u8>` to a serializer, and takes one from a deserializer, one element at a time (`Serializer::collect_seq`, `Visitor::visit_seq`): the plain codec encoded 100 KB in {} and decoded it in {} in this run (*Value codec*: `vec_u8_100KB_*`), against {} and {} for the same bytes as a `String` and {} for a plain copy. The decode hands the transport's buffer over (`codec::decode_vec` knows the type: `T: 'static`), so the encode is what is left: the set cannot borrow a `Vec<u8>`'s bytes as it borrows a `str`'s (serde gives the serializer its elements, not the slice), so it encodes them into the facade's buffer, a byte at a time, before the transport copies them. The transport's whole set+get took {} here. A caller with bytes to store gets the no-copy path with `serde_bytes::Bytes` (or `set_raw`).",
                shown(micro("codec", "vec_u8_100KB_encode")),
                shown(micro("codec", "vec_u8_100KB_decode")),
                shown(micro("codec", "string_100KB_encode")),
                shown(micro("codec", "string_100KB_decode")),
                shown(micro("codec", "memcpy_100KB")),
                shown(per_op(op, transport, 1.0)),
            ));
        } else if *op == "set_get_100KB" {
            why.push(format!(
                "**set+get of 100 KB as a `String`, `{facade}` over `{transport}` ({ratio}).** The set hands the caller's `str` to the transport as it is (`codec::with_encoding`: no copy, no allocation; *Heap allocations per call*), and the get hands the transport's buffer over as the `String` after checking its UTF-8 ({} for 100 KB here, `string_100KB_decode`), which a `String` needs and a `Vec<u8>` does not. The transport's whole set+get took {} here, so the check is about {} of it; the rest of the gap is the key function, the herd bits and the codec's dispatch per call (*Key function + herd flags + codec*), and this machine's noise (the middle half of the rounds is beside the ratio).",
                shown(micro("codec", "string_100KB_decode")),
                shown(per_op(op, transport, 1.0)),
                match (
                    mean_ns(&r.dir, "codec", "string_100KB_decode"),
                    ns_per(op, transport, 1.0),
                ) {
                    (Some(check), Some(pair)) if pair > 0.0 => format!("{:.1}%", check / pair * 100.0),
                    _ => "(not measured)".to_string(),
                },
            ));
        } else if *facade == "newcache-text-identity" {
            why.push(format!(
                "**get_many(100), `{facade}` over `{transport}` ({ratio}).** Both read the raw clients' own 100 short keys and the same items, and the facade's key function returns each key as it is, so no SHA-1 is in this ratio: it is the facade's own work. Per key: the key made (the user's closure returns a `String`) and checked before anything is sent (such a key function's keys can be refused one by one); per value: the herd state read from the flags, the UTF-8 check, and its place in the returned `GetMany` (whose keys are copied, hashed and indexed while the server answers: no allocation per key). The transport alone took {} per get_many of 100 here. `benches/examples/get_many_loop.rs` runs this call in a loop for a profiler.",
                shown(per_op(op, transport, 100.0)),
            ));
        } else {
            why.push(format!(
                "**get_many(100), `{facade}` over `{transport}` ({ratio}).** Both read the same 100 wire keys and items, so the difference is the facade's CPU per key: the key function (`hashed/short` {} per key, *Key functions*), reading the herd state from the flags, the `String` check of each value, and the returned `GetMany` (*Heap allocations per call*: three buffers, the keys copied, hashed and indexed while the server answers, `MadeKeys::sent`, none per key), and every value put in its key's entry after the reply. The transport alone took {} per get_many of 100 here.{} The key function alone is {} per 100 keys made four at a time, as a multi-get makes them (`hashed_100/four_at_a_time`; one at a time: {}), SHA-1 at the CPU's own SHA instructions. {}",
                shown(micro("keyfn", "hashed/short")),
                shown(per_op(op, transport, 100.0)),
                if *facade == "newcache-text" {
                    format!(
                        " Without the map (`get_many_ordered`, values in key order: `newcache-text-ordered`) the text facade ran at {} of the same transport row.",
                        x(inter
                            .ratio(op, "newcache-text-ordered", transport)
                            .map(|[p50, _, _]| p50))
                    )
                } else {
                    String::new()
                },
                shown(micro("keyfn", "hashed_100/four_at_a_time")),
                shown(micro("keyfn", "hashed_100/one_at_a_time")),
                if *facade == "newcache-text" {
                    "The text facade hashes every key before its request goes out, whole, as the transport's (`Transport::get_many_made`); the returned map's keys are copied and indexed while memcached answers (`MadeKeys::sent`)."
                } else {
                    "libmemcached's `memcached_mget` takes every key at once (a second `mget` first reads the replies of the one before), so no hashing overlaps the round trip over this transport."
                },
            ));
        }
    }
    why.append(&mut r.why);
    if !why.is_empty() {
        let _ = writeln!(
            r.md,
            "### Where a target is missed, and why\n\n{}\n",
            why.iter()
                .map(|w| format!("- {w}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
