//! The targets' ratios, measured interleaved: every client of an operation takes its turn
//! within one round (a short burst of the operation each, in a new order every round), and
//! the ratio of two clients is the median over the rounds of their ratio within a round.
//!
//! Criterion (the `transports` bench) measures each client for seconds before the next: on
//! this shared 2-core machine the speed drifts by tens of percent over that time, so two
//! rows of one criterion run can differ by more than the clients do. Within a round of a few
//! milliseconds the machine is the same for everyone.
//!
//! The value path (`clients::VALUE_PATH`): `set_get_100KB` (one set and one get of a
//! 100 KB value per operation) through `Cache` with a `String` and with a `Vec<u8>` value,
//! beside the transport alone storing and reading the same bytes with the same flags under a
//! key of the facade's wire key's length, over the text transport and over libmemcached's
//! binary protocol; `get_many_100` through `Cache` beside each transport alone reading the
//! facade's own wire keys and items. The printed table ends with those ratios.
//!
//! `get_hit` also runs through `AsyncCache` (`newcache-async`, one caller), so its ratio to
//! the blocking `Cache` is read in the same rounds, beside the async text transport alone
//! (`transport-tokio`) and a raw `mn` ping-pong on a tokio socket (`loopback-floor-mn-tokio`),
//! whose ratios to the blocking transport and floor say what the async transport and the
//! runtime's wait cost; `get_many_100` runs `transport-tokio` too. `get_many_100` also runs as
//! `Cache::get_many_ordered` (`newcache-text-ordered`: the
//! values in key order, no map), and through `AsyncCache` (`newcache-async`, the async text
//! transport on a current-thread runtime this thread drives), so both caches' multi-gets are
//! measured against raw libmemcached's in the same rounds. An async client's burst is one
//! task awaiting its operations one after another (one `block_on` per burst), as a
//! handler awaits them: a `block_on` per operation cost about 1,100 instructions per get
//! that no task pays (callgrind, `get_many_loop aget` against `agetl`: 9,149 against 7,967). The
//! `-identity` rows (`newcache-text-identity`, `newcache-async-identity`) read the raw
//! clients' own short keys through caches whose key function returns each key as it is: the
//! facade's cost with no SHA-1 in it, against the transport and raw libmemcached on the very
//! same keys.
//!
//! Not criterion: a plain timing loop. Prints a table; with `NEWCACHE_INTERLEAVED_OUT=path`
//! (`cargo xtask bench` sets it) also writes, for the report, `ops<TAB>op<TAB>client<TAB>ops/s`
//! lines (the median burst's rate) and `ratio<TAB>op<TAB>a<TAB>b<TAB>median<TAB>p25<TAB>p75`
//! lines for every ordered pair of an operation's clients (how many times faster a ran than
//! b within a round). Needs the `binary` feature (the baseline is raw libmemcached); without it
//! there is nothing to compare and it prints so. `NEWCACHE_BENCH_QUICK=1` runs fewer rounds;
//! run by `cargo test` (no `--bench` argument) it runs one round, as a smoke test.

#[cfg(feature = "binary")]
fn main() {
    use std::hint::black_box;
    use std::io::Write;
    use std::time::Instant;

    use newcache::Ttl;
    use newcache_benches::clients;
    use newcache_testkit::Memcached;
    use newcache_transport::{AsyncTransport, Store, Transport};
    use newcache_transport_binary::bare::Keys;

    /// A client's burst: `n` operations, one after another.
    type Run<'a> = Box<dyn FnMut(usize) + 'a>;
    /// An operation measured: its name, operations per burst, keys per operation, and its
    /// clients (the first is the baseline of its ratios).
    type Op<'a> = (&'static str, usize, usize, Vec<(&'static str, Run<'a>)>);

    const TTL: Ttl = Ttl::Seconds(3600);

    /// A blocking client's burst: its operation called `n` times.
    fn each<'a>(mut op: impl FnMut() + 'a) -> Run<'a> {
        Box::new(move |n| {
            for _ in 0..n {
                op();
            }
        })
    }

    /// An async client's burst: one task on `rt` awaiting `op`'s futures one after another,
    /// as a handler awaits them (a `block_on` per operation would cost what no task pays).
    fn awaited<'a, F: std::future::Future>(
        rt: &'a tokio::runtime::Runtime,
        mut op: impl FnMut() -> F + 'a,
    ) -> Run<'a> {
        Box::new(move |n| {
            rt.block_on(async {
                for _ in 0..n {
                    op().await;
                }
            });
        })
    }

    /// Times `rounds` rounds of every client's burst (`burst` operations) and returns, per
    /// client, the time per burst of every round, in round order.
    fn interleave(clients: &mut [(&str, Run<'_>)], rounds: usize, burst: usize) -> Vec<Vec<f64>> {
        let n = clients.len();
        let mut times = vec![Vec::with_capacity(rounds); n];
        // Warm every client up first (connections, buffers).
        for (_, run) in clients.iter_mut() {
            run(burst);
        }
        for round in 0..rounds {
            // A different client goes first each round, so none always follows the same one.
            for k in 0..n {
                let i = (round + k) % n;
                let Some((_, run)) = clients.get_mut(i) else {
                    continue;
                };
                let started = Instant::now();
                run(burst);
                if let Some(t) = times.get_mut(i) {
                    t.push(started.elapsed().as_secs_f64());
                }
            }
        }
        times
    }

    fn quantile(sorted: &[f64], q: f64) -> f64 {
        let i = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
        sorted.get(i).copied().unwrap_or(f64::NAN)
    }

    // `cargo bench` passes `--bench`; `cargo test` (the workspace's tests) does not: then
    // one round only checks that every client runs.
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = match (benching, newcache_benches::quick()) {
        (false, _) => 1,
        (true, true) => 40,
        (true, false) => 200,
    };
    let server = Memcached::with_args(&["-t", "1"]);
    let addr = server.addr();
    let value = "x".repeat(100);
    let caches = clients::caches(&addr);
    let wrappers = clients::wrapper_libmemcached(&addr);
    let bare = clients::bare_libmemcached(&addr);
    let text = clients::text_transport(&addr);
    let cache = |name: &str| {
        caches
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c)
            .expect("a cache of that name")
    };
    let (text_cache, binary_cache) = (
        cache("newcache-text"),
        cache("newcache-libmemcached-binary"),
    );
    let wrapper_binary = wrappers
        .iter()
        .find(|(n, _)| *n == "wrapper-libmemcached-binary")
        .map(|(_, t)| t)
        .expect("binary wrapper");
    let bare_handle = |name: &str| {
        bare.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, h)| h)
            .expect("a bare handle of that name")
    };
    let (bare_text, bare_binary) = (
        bare_handle("libmemcached-sys-text"),
        bare_handle("libmemcached-sys-binary"),
    );

    // What each client reads: the facade's items (through either cache: same wire keys),
    // the raw clients' own short keys, and the facade's exact wire keys for the same-bytes
    // rows.
    let keys = clients::many_keys();
    clients::seed(text_cache, &value, &keys);
    let raw_names = clients::seed_raw_many(&text, value.as_bytes());
    let raw_refs: Vec<&[u8]> = raw_names.iter().map(String::as_bytes).collect();
    text.store(&Store::set(b"raw-hit", value.as_bytes(), 16, 0))
        .expect("store");
    let short_keys = Keys::new(&raw_names);
    let wire_hit = text_cache.wire_key("hit").expect("wire key");
    let wire_many: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| text_cache.wire_key(k).expect("wire key"))
        .collect();
    let wire_keys = Keys::new(&wire_many);
    let wire_refs: Vec<&[u8]> = wire_many.iter().map(Vec::as_slice).collect();
    let wire_set = text_cache.wire_key("set").expect("wire key");
    // `AsyncCache` (issue 12 item 8: get_many "on both caches"): over the async text
    // transport, a burst awaited in one task on a current-thread runtime driven by this
    // thread (`block_on`), as a handler awaits it on the worker that also polls the sockets. (Blocking on a
    // multi-thread runtime from outside it would add two thread hand-offs per call that no
    // task on the runtime pays; the async concurrency bench measures that runtime.)
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let async_cache = rt.block_on(async {
        newcache::AsyncCache::from_url(&format!("newcache://{addr}/?transport=text"))
            .expect("async cache")
    });
    // The facade over the raw clients' own short keys, through an identity key function
    // (a user's `Fn(&str) -> String`): the facade's value path without SHA-1.
    let identity_cache = clients::identity_keys(&addr)
        .build()
        .expect("identity cache");
    let identity_async = rt.block_on(async {
        clients::identity_keys(&addr)
            .build_async()
            .expect("identity async cache")
    });
    let mut floor = clients::floor(&addr);
    // The async text transport alone, and the floor on tokio, on the same runtime: with the
    // blocking transport and floor, where the 1-caller and multi-get gaps of `AsyncCache`
    // come from (the runtime's wait, the async transport, the facade).
    let (tokio_text, tokio_floor) = rt.block_on(async {
        (
            clients::tokio_text_transport(&addr),
            clients::tokio_floor(&addr).await,
        )
    });

    // set+get of 100 KB. The transport rows store what the facade's `String` row stores
    // (its bytes, and its flags: text and the herd state) under keys of the facade's wire
    // keys' length.
    let big_text = clients::big_value();
    let big_bytes = big_text.as_bytes().to_vec();
    let big_flags = clients::big_flags(text_cache, &text, "big-text-string");
    let wire_big_text = text_cache.wire_key("big-transport").expect("wire key");
    let wire_big_binary = text_cache.wire_key("big-wrapper").expect("wire key");
    let big_len = |n: Option<usize>| assert_eq!(n, Some(clients::BIG));

    let mut out = String::new();
    let mut table = String::new();
    // (op, operations per burst, keys per operation, clients); the first client is the
    // baseline of the op's ratios.
    let mut ops: Vec<Op<'_>> = vec![
        (
            "get_hit",
            50,
            1,
            vec![
                (
                    "libmemcached-sys-text",
                    each(|| {
                        black_box(bare_text.borrow_mut().get(b"raw-hit").expect("get"));
                    }),
                ),
                (
                    "newcache-text",
                    each(|| {
                        black_box(text_cache.get::<String>("hit").expect("get"));
                    }),
                ),
                // One caller of `AsyncCache` (issue 12 item 7's 1-caller target, measured
                // here in the same rounds as the blocking `Cache`).
                (
                    "newcache-async",
                    awaited(&rt, || async {
                        black_box(async_cache.get::<String>("hit").await.expect("get"));
                    }),
                ),
                (
                    "transport-text",
                    each(|| {
                        black_box(text.get(b"raw-hit").expect("get"));
                    }),
                ),
                (
                    "libmemcached-sys-text-facade-wire-bytes",
                    each(|| {
                        black_box(bare_text.borrow_mut().get(&wire_hit).expect("get"));
                    }),
                ),
                (
                    "loopback-floor-mn",
                    each(|| clients::floor_round_trip(&mut floor)),
                ),
                (
                    "loopback-floor-mn-tokio",
                    awaited(&rt, || async {
                        clients::tokio_floor_round_trip(&tokio_floor).await;
                    }),
                ),
                (
                    "transport-tokio",
                    awaited(&rt, || async {
                        black_box(tokio_text.get(b"raw-hit").await.expect("get"));
                    }),
                ),
                (
                    "libmemcached-sys-binary",
                    each(|| {
                        black_box(bare_binary.borrow_mut().get(b"raw-hit").expect("get"));
                    }),
                ),
                (
                    "newcache-libmemcached-binary",
                    each(|| {
                        black_box(binary_cache.get::<String>("hit").expect("get"));
                    }),
                ),
                (
                    "wrapper-libmemcached-binary",
                    each(|| {
                        black_box(wrapper_binary.get(b"raw-hit").expect("get"));
                    }),
                ),
            ],
        ),
        (
            "set_100B",
            50,
            1,
            vec![
                (
                    "libmemcached-sys-text",
                    each(|| {
                        bare_text
                            .borrow_mut()
                            .set(b"raw-set", value.as_bytes())
                            .expect("set")
                    }),
                ),
                (
                    "newcache-text",
                    each(|| text_cache.set("set", value.as_str(), TTL).expect("set")),
                ),
                (
                    "transport-text",
                    each(|| {
                        text.store(&Store::set(b"raw-set", value.as_bytes(), 16, 3600))
                            .expect("store");
                    }),
                ),
                (
                    // The facade's wire key and bytes: the value is stored bare (the herd
                    // state rides in the flags).
                    "libmemcached-sys-text-facade-wire-bytes",
                    each(|| {
                        bare_text
                            .borrow_mut()
                            .set(&wire_set, value.as_bytes())
                            .expect("set")
                    }),
                ),
                (
                    "libmemcached-sys-binary",
                    each(|| {
                        bare_binary
                            .borrow_mut()
                            .set(b"raw-set", value.as_bytes())
                            .expect("set")
                    }),
                ),
                (
                    "newcache-libmemcached-binary",
                    each(|| binary_cache.set("set", value.as_str(), TTL).expect("set")),
                ),
                (
                    "wrapper-libmemcached-binary",
                    each(|| {
                        wrapper_binary
                            .store(&Store::set(b"raw-set", value.as_bytes(), 16, 3600))
                            .expect("store");
                    }),
                ),
            ],
        ),
        (
            "get_many_100",
            10,
            100,
            vec![
                (
                    "libmemcached-sys-text",
                    each(|| {
                        let got = bare_text.borrow_mut().get_many(&short_keys).expect("mget");
                        assert_eq!(got, (100, 10_000));
                    }),
                ),
                (
                    "newcache-text",
                    each(|| {
                        clients::all_hundred(text_cache.get_many(&keys));
                    }),
                ),
                (
                    "newcache-text-ordered",
                    each(|| {
                        let got: Vec<Option<String>> = text_cache
                            .get_many_ordered(&keys)
                            .expect("get_many_ordered");
                        assert!(got.iter().all(Option::is_some));
                    }),
                ),
                (
                    "newcache-async",
                    awaited(&rt, || async {
                        clients::all_hundred(async_cache.get_many(&keys).await);
                    }),
                ),
                (
                    "newcache-text-identity",
                    each(|| {
                        clients::all_hundred(identity_cache.get_many(&raw_names));
                    }),
                ),
                (
                    "newcache-async-identity",
                    awaited(&rt, || async {
                        clients::all_hundred(identity_async.get_many(&raw_names).await);
                    }),
                ),
                (
                    "transport-text",
                    each(|| {
                        black_box(text.get_many(&raw_refs).expect("get_many"));
                    }),
                ),
                (
                    "transport-tokio",
                    awaited(&rt, || async {
                        black_box(tokio_text.get_many(&raw_refs).await.expect("get_many"));
                    }),
                ),
                (
                    "transport-text-facade-wire-bytes",
                    each(|| {
                        let items = text.get_many(&wire_refs).expect("get_many");
                        assert!(items.iter().all(Option::is_some));
                    }),
                ),
                (
                    "libmemcached-sys-text-facade-wire-bytes",
                    each(|| {
                        let got = bare_text.borrow_mut().get_many(&wire_keys).expect("mget");
                        assert_eq!(got, (100, 10_000));
                    }),
                ),
                (
                    "libmemcached-sys-binary",
                    each(|| {
                        let got = bare_binary
                            .borrow_mut()
                            .get_many(&short_keys)
                            .expect("mget");
                        assert_eq!(got, (100, 10_000));
                    }),
                ),
                (
                    "newcache-libmemcached-binary",
                    each(|| {
                        clients::all_hundred(binary_cache.get_many(&keys));
                    }),
                ),
                (
                    "wrapper-libmemcached-binary",
                    each(|| {
                        black_box(wrapper_binary.get_many(&raw_refs).expect("get_many"));
                    }),
                ),
                (
                    "wrapper-libmemcached-binary-facade-wire-bytes",
                    each(|| {
                        let items = wrapper_binary.get_many(&wire_refs).expect("get_many");
                        assert!(items.iter().all(Option::is_some));
                    }),
                ),
            ],
        ),
        (
            "set_get_100KB",
            10,
            1,
            vec![
                (
                    "libmemcached-sys-text",
                    each(|| {
                        let mut bare = bare_text.borrow_mut();
                        bare.set(b"raw-big", big_text.as_bytes()).expect("set");
                        big_len(bare.get(b"raw-big").expect("get"));
                    }),
                ),
                (
                    "transport-text",
                    each(|| {
                        let store =
                            Store::set(&wire_big_text, big_text.as_bytes(), big_flags, 3600);
                        text.store(&store).expect("store");
                        let item = text.get(&wire_big_text).expect("get");
                        big_len(item.map(|i| i.value.len()));
                    }),
                ),
                (
                    "newcache-text-string",
                    each(|| {
                        text_cache
                            .set("big-text-string", big_text.as_str(), TTL)
                            .expect("set");
                        let got: Option<String> = text_cache.get("big-text-string").expect("get");
                        big_len(got.map(|v| v.len()));
                    }),
                ),
                (
                    "newcache-text-vec",
                    each(|| {
                        text_cache
                            .set("big-text-vec", &big_bytes, TTL)
                            .expect("set");
                        let got: Option<Vec<u8>> = text_cache.get("big-text-vec").expect("get");
                        big_len(got.map(|v| v.len()));
                    }),
                ),
                (
                    "libmemcached-sys-binary",
                    each(|| {
                        let mut bare = bare_binary.borrow_mut();
                        bare.set(b"raw-big", big_text.as_bytes()).expect("set");
                        big_len(bare.get(b"raw-big").expect("get"));
                    }),
                ),
                (
                    "wrapper-libmemcached-binary",
                    each(|| {
                        let store =
                            Store::set(&wire_big_binary, big_text.as_bytes(), big_flags, 3600);
                        wrapper_binary.store(&store).expect("store");
                        let item = wrapper_binary.get(&wire_big_binary).expect("get");
                        big_len(item.map(|i| i.value.len()));
                    }),
                ),
                (
                    "newcache-libmemcached-binary-string",
                    each(|| {
                        binary_cache
                            .set("big-binary-string", big_text.as_str(), TTL)
                            .expect("set");
                        let got: Option<String> =
                            binary_cache.get("big-binary-string").expect("get");
                        big_len(got.map(|v| v.len()));
                    }),
                ),
                (
                    "newcache-libmemcached-binary-vec",
                    each(|| {
                        binary_cache
                            .set("big-binary-vec", &big_bytes, TTL)
                            .expect("set");
                        let got: Option<Vec<u8>> = binary_cache.get("big-binary-vec").expect("get");
                        big_len(got.map(|v| v.len()));
                    }),
                ),
            ],
        ),
    ];
    let started = Instant::now();
    // Every ratio measured: (op, a, b) -> how many times faster a ran than b (median, p25,
    // p75 over the rounds).
    let mut measured: Vec<(&str, &str, &str, [f64; 3])> = Vec::new();
    for (op, burst, per_op, clients) in &mut ops {
        let times = interleave(clients, rounds, *burst);
        let names: Vec<&str> = clients.iter().map(|(n, _)| *n).collect();
        // a's speed over b's within each round (b's time over a's), sorted.
        let ratios = |a: usize, b: usize| -> [f64; 3] {
            let (Some(ta), Some(tb)) = (times.get(a), times.get(b)) else {
                return [f64::NAN; 3];
            };
            let mut r: Vec<f64> = ta.iter().zip(tb).map(|(x, y)| y / x).collect();
            r.sort_by(f64::total_cmp);
            [0.5, 0.25, 0.75].map(|q| quantile(&r, q))
        };
        for (a, name) in names.iter().enumerate() {
            let mut per_burst = times.get(a).cloned().unwrap_or_default();
            per_burst.sort_by(f64::total_cmp);
            let ops_s = (*burst * *per_op) as f64 / quantile(&per_burst, 0.5);
            out.push_str(&format!("ops\t{op}\t{name}\t{ops_s:.0}\n"));
            for (b, other) in names.iter().enumerate() {
                if a != b {
                    let r = ratios(a, b);
                    let [p50, p25, p75] = r;
                    out.push_str(&format!(
                        "ratio\t{op}\t{name}\t{other}\t{p50:.4}\t{p25:.4}\t{p75:.4}\n"
                    ));
                    measured.push((op, name, other, r));
                }
            }
            let [p50, p25, p75] = ratios(a, 0);
            table.push_str(&format!(
                "{op:<13} {name:<46} {ops_s:>10.0} {p50:>6.2}x  [{p25:.2}x {p75:.2}x]\n"
            ));
        }
    }
    println!(
        "interleaved: {rounds} rounds per op in {:.0} s; ops/s (median burst), ratio to the op's first row (median, [p25 p75])",
        started.elapsed().as_secs_f64()
    );
    print!("{table}");
    println!(
        "value path: facade / the transport alone (median, [p25 p75]), target >= {:.2}x",
        clients::VALUE_PATH_TARGET
    );
    for (op, facade, transport) in clients::VALUE_PATH {
        let found = measured
            .iter()
            .find(|(o, a, b, _)| o == op && a == facade && b == transport);
        if let Some((_, _, _, [p50, p25, p75])) = found {
            let verdict = if *p50 >= clients::VALUE_PATH_TARGET {
                "met"
            } else {
                "missed"
            };
            println!(
                "{op:<13} {facade:<35} / {transport:<45} {p50:>5.2}x  [{p25:.2}x {p75:.2}x] {verdict}"
            );
        }
    }
    if let Some(path) = std::env::var_os("NEWCACHE_INTERLEAVED_OUT") {
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(out.as_bytes()))
            .unwrap_or_else(|e| panic!("{}: {e}", path.to_string_lossy()));
    }
}

#[cfg(not(feature = "binary"))]
fn main() {
    println!("interleaved: the baseline is raw libmemcached; build with --features binary");
}
