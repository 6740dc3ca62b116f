//! Every reply is matched to its request, measured from outside: a fault-injecting proxy
//! ([`newcache_testkit::proxy::FaultProxy`]) between the text transport and a real memcached
//! duplicates replies (in the same write, in part, and 30 ms later), injects older replies, stray reply lines and garbage,
//! truncates, delays and trickles them one byte at a time, while 16 threads run mixed
//! operations (get, get_many, get_many_made, set, add, delete, incr, touch, set_many,
//! delete_many_quiet) on values that carry their own key, version and checksum.
//!
//! Each thread owns its keys and keeps a model of what each may hold (a set of possible
//! versions; a failed request may or may not have run, and may even run later, after the
//! requests that followed it: it timed out while still on its way, in the proxy, so its
//! effect stays possible for [`FLOAT`]), so every answer is checked: a value of another key, a version the key cannot
//! hold, a counter that is not one more than the last, a status the key's state rules out
//! (`add` stored where an item is, `delete` found nothing where one must be...) is a wrong
//! answer. Errors are fine (and counted by kind); wrong answers must be none.
//!
//! With the meta protocol (memcached 1.6.18, [`Protocol::Meta`] and [`Protocol::Auto`])
//! every fault is caught by the replies' opaque tokens and keys. With the classic protocol
//! ([`Protocol::Classic`]) the faults that protocol can detect are run and must give no wrong
//! answer (duplicates in the same write, garbage, truncation, delays, trickling, and late
//! duplicates that land on an idle connection); the run with replies duplicated or replayed
//! while the next request is in flight (late duplicates, older replies, and duplicates that
//! trickle in after the original was read) shows what it cannot detect (a duplicate `STORED`
//! or number is the same bytes as the awaited one), and is reported, not asserted.
//!
//! `NEWCACHE_FAULT_SECS` sets each run's length (default 3 s).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use newcache_testkit::proxy::{FaultCounts, FaultProxy, Faults};
use newcache_testkit::Memcached;
use newcache_tests::checked::{parse_value, value_of, Rng};
use newcache_transport::{Error, Item, Premade, Store, StoreMode, StoreStatus, Transport};
use newcache_transport_text::{Protocol, TextConfig, TextTransport};

const THREADS: usize = 16;
const KEYS_PER_THREAD: usize = 12;
/// Keys never written, per thread: the misses of its multi-gets.
const ABSENT: usize = 50;
/// How many times a large multi-get names each of the thread's keys.
const NAMED: usize = 5;

/// How long the effect of a failed request stays possible: one that timed out may still be
/// on its way to the server (in the proxy's buffers, behind a thread of the proxy the
/// machine did not run yet) and land after later requests.
const FLOAT: Duration = Duration::from_secs(2);

fn run_secs() -> Duration {
    let secs = std::env::var("NEWCACHE_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Every fault, at rates that give hundreds of each in a few seconds.
fn every_fault() -> Faults {
    Faults::none()
        .duplicate_now(4_000)
        .duplicate_part(4_000)
        .carry_part(4_000)
        .stray_line(2_000)
        .duplicate_later(4_000)
        .replay_old(3_000)
        .garbage(1_000)
        .truncate(1_000)
        .delayed(2_000, Duration::from_millis(300))
        .trickle(4_000)
}

/// The faults the classic protocol can detect: every one but duplicates and replays that
/// may land while the next request is in flight, and a reply duplicated in part (a number
/// line cut and sent twice, `30000` then `3000000015`, is one longer number line: untagged,
/// nothing shows it). Duplicates in the same write are not
/// trickled here: a copy that trickles in after the client has read the original is a late
/// duplicate.
fn classic_detectable_faults() -> Faults {
    Faults::none()
        .duplicate_now(6_000)
        .stray_line(2_000)
        .garbage(1_000)
        .truncate(1_000)
        .delayed(2_000, Duration::from_millis(300))
}

/// Replies trickled one byte at a time (with garbage, truncation and delays), no duplicates.
fn classic_trickle_faults() -> Faults {
    Faults::none()
        .trickle(20_000)
        .garbage(1_000)
        .truncate(1_000)
        .delayed(2_000, Duration::from_millis(300))
}

/// What one thread knows of its keys: for each, the versions it may hold (`None`: no item).
struct Model {
    thread: usize,
    keys: Vec<Vec<u8>>,
    possible: Vec<BTreeSet<Option<u64>>>,
    /// Per key, what failed requests may still make of it (a version, or `None` for a
    /// delete), and when they failed.
    floating: Vec<Vec<(Option<u64>, Instant)>>,
    absent: Vec<u8>,
    counter: Vec<u8>,
    /// The counter's last known value, and how many failed increments may still land.
    counter_at: (u64, u64),
    next_version: u64,
    rng: Rng,
}

/// What a run saw.
#[derive(Debug, Default)]
struct Tally {
    ops: u64,
    errors: BTreeMap<String, u64>,
    wrong: u64,
    /// Reads explained only by a failed write that landed after later requests.
    late: u64,
    examples: Vec<String>,
}

fn error_kind(e: &Error) -> String {
    let debug = format!("{e:?}");
    let end = debug.find([' ', '{', '(']).unwrap_or(debug.len());
    debug[..end].to_string()
}

impl Model {
    fn new(thread: usize) -> Model {
        Model {
            thread,
            keys: (0..KEYS_PER_THREAD)
                .map(|i| format!("fault:{thread}:{i}").into_bytes())
                .collect(),
            possible: vec![BTreeSet::from([None]); KEYS_PER_THREAD],
            floating: vec![Vec::new(); KEYS_PER_THREAD],
            absent: format!("fault:{thread}:never-written").into_bytes(),
            counter: format!("fault:{thread}:counter").into_bytes(),
            counter_at: (thread as u64 * 1_000_000_000, 0),
            next_version: (thread as u64) << 40,
            rng: Rng(
                0x9E37_79B9_7F4A_7C15 ^ (thread as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
            ),
        }
    }

    fn fresh_value(&mut self, k: usize) -> (u64, Vec<u8>) {
        self.next_version += 1;
        let pad = match self.rng.below(50) {
            // Sometimes a value large enough to be read straight into its buffer.
            0 => 20_000 + self.rng.below(20_000) as usize,
            _ => self.rng.below(300) as usize,
        };
        (
            self.next_version,
            value_of(&self.keys[k], self.next_version, pad),
        )
    }

    fn wrong(&self, tally: &mut Tally, what: String) {
        tally.wrong += 1;
        if tally.examples.len() < 12 {
            tally
                .examples
                .push(format!("thread {}: {what}", self.thread));
        }
    }

    /// Checks a read of key `k` and learns from it.
    fn read(&mut self, tally: &mut Tally, k: usize, got: Option<&Item>, op: &str) {
        let key = self.keys[k].clone();
        let seen = match got {
            None => None,
            Some(item) => match parse_value(&item.value) {
                Err(e) => return self.wrong(tally, format!("{op} {key:?}: {e}")),
                Ok((other, _)) if other != key => {
                    return self.wrong(
                        tally,
                        format!(
                            "{op} {:?}: the value of {:?}",
                            String::from_utf8_lossy(&key),
                            String::from_utf8_lossy(other)
                        ),
                    )
                }
                Ok((_, version)) => {
                    if u64::from(item.flags) != version & 0xffff_ffff {
                        return self.wrong(tally, format!("{op}: flags of another version"));
                    }
                    Some(version)
                }
            },
        };
        if !self.possible[k].contains(&seen) && self.could_be(k, seen) {
            // Explained only by a failed request that landed after later ones.
            tally.late += 1;
        }
        if !self.could_be(k, seen) {
            let possible = self.possible[k].clone();
            return self.wrong(
                tally,
                format!(
                    "{op} {:?}: {seen:?}, where it may hold only {possible:?}",
                    String::from_utf8_lossy(&key)
                ),
            );
        }
        self.possible[k] = BTreeSet::from([seen]);
        if seen.is_some() {
            // A failed write that has landed does not land again.
            self.floating[k].retain(|(f, _)| *f != seen);
        }
    }

    /// True when key `k` may hold `state`: known, or the effect of a failed request.
    fn could_be(&mut self, k: usize, state: Option<u64>) -> bool {
        self.floating[k].retain(|(_, at)| at.elapsed() < FLOAT);
        self.possible[k].contains(&state) || self.floating[k].iter().any(|(f, _)| *f == state)
    }

    /// A request that would leave key `k` in `state` failed: it may have run, or run later.
    fn float(&mut self, k: usize, state: Option<u64>) {
        self.possible[k].insert(state);
        self.floating[k].push((state, Instant::now()));
    }

    fn failed(&self, tally: &mut Tally, e: &Error) {
        *tally.errors.entry(error_kind(e)).or_default() += 1;
    }

    fn has_item(&mut self, k: usize) -> bool {
        self.floating[k].retain(|(_, at)| at.elapsed() < FLOAT);
        self.possible[k].iter().any(Option::is_some)
            || self.floating[k].iter().any(|(f, _)| f.is_some())
    }

    fn may_be_empty(&mut self, k: usize) -> bool {
        self.could_be(k, None)
    }

    /// The `n`th key of this thread's that is never written.
    fn absent_key(&self, n: usize) -> Vec<u8> {
        let mut key = self.absent.clone();
        key.extend_from_slice(format!(":{n}").as_bytes());
        key
    }

    /// Counts a value read for a key never written (the first one of `items`) as wrong.
    fn never_written<'i>(
        &self,
        tally: &mut Tally,
        op: &str,
        mut items: impl Iterator<Item = &'i Item>,
    ) {
        if let Some(item) = items.next() {
            let what = format!(
                "{op}: a value ({:?}...) for a key never written",
                String::from_utf8_lossy(&item.value[..item.value.len().min(30)])
            );
            self.wrong(tally, what);
        }
    }

    /// A multi-get of 110 keys made during the call (`Transport::get_many_made`): each of
    /// the thread's keys named [`NAMED`] times, then [`ABSENT`] never written. On one server
    /// it goes out whole once every key is made (in meta, closed by a tagged `mg`). What it
    /// hands over is checked when the call succeeds; a failed call's items are the caller's
    /// to drop.
    fn get_many_made(&mut self, t: &dyn Transport, tally: &mut Tally) {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for _ in 0..NAMED {
            keys.extend(self.keys.iter().cloned());
        }
        keys.extend((0..ABSENT).map(|n| self.absent_key(n)));
        let mut made = Premade::new(&keys);
        let mut got: Vec<Option<Item>> = vec![None; keys.len()];
        let mut twice = Vec::new();
        let outcome = t.get_many_made(&mut made, &mut |i, key, item| match got.get_mut(i) {
            Some(slot @ None) if key == keys[i] => *slot = Some(item),
            _ => twice.push(i),
        });
        match outcome {
            Ok(()) => {
                for i in twice {
                    self.wrong(
                        tally,
                        format!("get_many_made: key {i} handed over twice, or with another key"),
                    );
                }
                let named = KEYS_PER_THREAD * NAMED;
                for (i, item) in got.iter().enumerate().take(named) {
                    self.read(tally, i % KEYS_PER_THREAD, item.as_ref(), "get_many_made");
                }
                self.never_written(tally, "get_many_made", got[named..].iter().flatten());
            }
            Err(e) => self.failed(tally, &e),
        }
    }

    /// One random operation, checked.
    fn step(&mut self, t: &dyn Transport, tally: &mut Tally) {
        tally.ops += 1;
        let k = self.rng.below(KEYS_PER_THREAD as u64) as usize;
        match self.rng.below(100) {
            0..=24 => match t.get(&self.keys[k].clone()) {
                Ok(got) => self.read(tally, k, got.as_ref(), "get"),
                Err(e) => self.failed(tally, &e),
            },
            36..=39 => self.get_many_made(t, tally),
            25..=35 => {
                // Mostly a few keys (one tagged `mg` each in meta); one in four, all of the
                // thread's keys and 13 never written (over 20 keys: one `gets` closed by a
                // tagged `mg`).
                let picks: Vec<usize> = if self.rng.below(4) == 0 {
                    (0..KEYS_PER_THREAD).collect()
                } else {
                    let mut picks: Vec<usize> = (0..4)
                        .map(|_| self.rng.below(KEYS_PER_THREAD as u64) as usize)
                        .collect();
                    picks.sort_unstable();
                    picks.dedup();
                    picks
                };
                let absent = if picks.len() == KEYS_PER_THREAD {
                    13
                } else {
                    1
                };
                let mut keys: Vec<Vec<u8>> = picks.iter().map(|&p| self.keys[p].clone()).collect();
                keys.extend((0..absent).map(|n| self.absent_key(n)));
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                match t.get_many(&refs) {
                    Ok(items) if items.len() == refs.len() => {
                        for (&p, item) in picks.iter().zip(&items) {
                            self.read(tally, p, item.as_ref(), "get_many");
                        }
                        self.never_written(
                            tally,
                            "get_many",
                            items[picks.len()..].iter().flatten(),
                        );
                    }
                    Ok(items) => self.wrong(
                        tally,
                        format!("get_many: {} answers to {}", items.len(), refs.len()),
                    ),
                    Err(e) => self.failed(tally, &e),
                }
            }
            40..=59 => {
                let (version, value) = self.fresh_value(k);
                let key = self.keys[k].clone();
                match t.store(&Store::set(&key, &value, version as u32, 0)) {
                    Ok(StoreStatus::Stored) => self.possible[k] = BTreeSet::from([Some(version)]),
                    Ok(other) => self.wrong(tally, format!("set: {other:?}")),
                    Err(e) => {
                        self.failed(tally, &e);
                        self.float(k, Some(version));
                    }
                }
            }
            60..=67 => {
                let (version, value) = self.fresh_value(k);
                let key = self.keys[k].clone();
                let add = Store::set(&key, &value, version as u32, 0).with_mode(StoreMode::Add);
                match t.store(&add) {
                    Ok(StoreStatus::Stored) if self.may_be_empty(k) => {
                        self.possible[k] = BTreeSet::from([Some(version)])
                    }
                    Ok(StoreStatus::NotStored) if self.has_item(k) => {
                        self.possible[k].remove(&None);
                    }
                    Ok(status) => {
                        let possible = self.possible[k].clone();
                        self.wrong(
                            tally,
                            format!("add: {status:?} where the key may hold {possible:?}"),
                        )
                    }
                    Err(e) => {
                        self.failed(tally, &e);
                        self.float(k, Some(version));
                    }
                }
            }
            68..=75 => match t.delete(&self.keys[k].clone()) {
                Ok(found) if (found && self.has_item(k)) || (!found && self.may_be_empty(k)) => {
                    self.possible[k] = BTreeSet::from([None])
                }
                Ok(found) => {
                    let possible = self.possible[k].clone();
                    self.wrong(
                        tally,
                        format!("delete: {found} where the key may hold {possible:?}"),
                    )
                }
                Err(e) => {
                    self.failed(tally, &e);
                    self.float(k, None);
                }
            },
            76..=85 => {
                let (at, pending) = self.counter_at;
                match t.incr(&self.counter.clone(), 1) {
                    Ok(Some(n)) if n > at && n <= at + 1 + pending => {
                        self.counter_at = (n, pending - (n - at - 1))
                    }
                    Ok(other) => {
                        self.wrong(
                            tally,
                            format!(
                                "incr: {other:?} where the counter is {at} plus 1 (and up to {pending} failed increments)"
                            ),
                        );
                        // What the counter holds is not known any more: one wrong answer
                        // must not make every later one look wrong.
                        self.counter_at = (other.unwrap_or(at), pending);
                    }
                    Err(e) => {
                        self.failed(tally, &e);
                        self.counter_at = (at, pending + 1);
                    }
                }
            }
            86..=91 => match t.touch(&self.keys[k].clone(), 0) {
                Ok(true) if self.has_item(k) => {
                    self.possible[k].remove(&None);
                }
                Ok(false) if self.may_be_empty(k) => self.possible[k] = BTreeSet::from([None]),
                Ok(found) => {
                    let possible = self.possible[k].clone();
                    self.wrong(
                        tally,
                        format!("touch: {found} where the key may hold {possible:?}"),
                    )
                }
                Err(e) => self.failed(tally, &e),
            },
            92..=94 => {
                // Quiet deletes: Ok means every delete was processed.
                let mut picks: Vec<usize> = (0..3)
                    .map(|_| self.rng.below(KEYS_PER_THREAD as u64) as usize)
                    .collect();
                picks.sort_unstable();
                picks.dedup();
                let keys: Vec<Vec<u8>> = picks.iter().map(|&p| self.keys[p].clone()).collect();
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                match t.delete_many_quiet(&refs) {
                    Ok(()) => {
                        for &p in &picks {
                            self.possible[p] = BTreeSet::from([None]);
                        }
                    }
                    Err(e) => {
                        self.failed(tally, &e);
                        for &p in &picks {
                            self.float(p, None);
                        }
                    }
                }
            }
            _ => {
                let mut picks: Vec<usize> = (0..3)
                    .map(|_| self.rng.below(KEYS_PER_THREAD as u64) as usize)
                    .collect();
                picks.sort_unstable();
                picks.dedup();
                let values: Vec<(usize, u64, Vec<u8>)> = picks
                    .iter()
                    .map(|&p| {
                        let (v, bytes) = self.fresh_value(p);
                        (p, v, bytes)
                    })
                    .collect();
                let keys: Vec<Vec<u8>> = values
                    .iter()
                    .map(|(p, _, _)| self.keys[*p].clone())
                    .collect();
                let requests: Vec<Store<'_>> = values
                    .iter()
                    .zip(&keys)
                    .map(|((_, v, bytes), key)| Store::set(key, bytes, *v as u32, 0))
                    .collect();
                match t.store_many(&requests) {
                    Ok(statuses)
                        if statuses.len() == requests.len()
                            && statuses.iter().all(|s| *s == StoreStatus::Stored) =>
                    {
                        for (p, v, _) in &values {
                            self.possible[*p] = BTreeSet::from([Some(*v)]);
                        }
                    }
                    Ok(statuses) => self.wrong(tally, format!("set_many: {statuses:?}")),
                    Err(e) => {
                        self.failed(tally, &e);
                        for (p, v, _) in &values {
                            self.float(*p, Some(*v));
                        }
                    }
                }
            }
        }
    }
}

/// Writes every thread's keys and counter with no fault, then runs the threads under
/// `faults` for `secs`.
fn hammer(t: &dyn Transport, proxy: &FaultProxy, faults: Faults, secs: Duration) -> Tally {
    proxy.set_faults(Faults::none());
    let mut models: Vec<Model> = (0..THREADS).map(Model::new).collect();
    for m in &mut models {
        let start = m.counter_at.0.to_string();
        t.store(&Store::set(&m.counter, start.as_bytes(), 0, 0))
            .expect("the counters are set up without faults");
        for n in 0..ABSENT {
            t.delete(&m.absent_key(n)).expect("setup");
        }
        for k in 0..KEYS_PER_THREAD {
            let key = m.keys[k].clone();
            t.delete(&key).expect("setup");
        }
    }
    proxy.set_faults(faults);
    let total = Mutex::new(Tally::default());
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    std::thread::scope(|s| {
        for mut model in models {
            let (total, stop, ops) = (&total, &stop, &ops);
            s.spawn(move || {
                let mut tally = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    model.step(t, &mut tally);
                }
                ops.fetch_add(tally.ops, Ordering::Relaxed);
                let mut total = total.lock().unwrap();
                total.ops += tally.ops;
                total.wrong += tally.wrong;
                total.late += tally.late;
                for (kind, n) in tally.errors {
                    *total.errors.entry(kind).or_default() += n;
                }
                total.examples.extend(tally.examples);
            });
        }
        std::thread::sleep(secs);
        stop.store(true, Ordering::Relaxed);
    });
    proxy.set_faults(Faults::none());
    total.into_inner().unwrap()
}

fn report(what: &str, tally: &Tally, counts: &FaultCounts, took: Duration) {
    let errors: u64 = tally.errors.values().sum();
    println!(
        "{what}: {} operations in {:.1} s, {errors} errors {:?}, {} wrong answers ({} reads of a failed write that landed late)",
        tally.ops,
        took.as_secs_f64(),
        tally.errors,
        tally.wrong,
        tally.late
    );
    println!("  proxy: {counts:?}");
    for e in &tally.examples {
        println!("  wrong: {e}");
    }
}

/// One memcached, the fault proxy in front, and a text transport speaking `protocol` to it.
fn setup(protocol: Protocol) -> (Memcached, FaultProxy, TextTransport) {
    let server = Memcached::start();
    let proxy = FaultProxy::start(server.socket_addr(), Faults::none());
    let transport = TextTransport::new(TextConfig {
        servers: vec![proxy.addr()],
        read_timeout: Duration::from_millis(200),
        write_timeout: Duration::from_millis(200),
        protocol,
        ..TextConfig::default()
    })
    .expect("transport");
    (server, proxy, transport)
}

fn run(protocol: Protocol, faults: Faults, what: &str) -> (Tally, FaultCounts) {
    let (_server, proxy, transport) = setup(protocol);
    let started = Instant::now();
    let tally = hammer(&transport, &proxy, faults, run_secs());
    let counts = proxy.counts();
    report(what, &tally, &counts, started.elapsed());
    if protocol != Protocol::Classic {
        assert_eq!(
            transport.server_protocol(0),
            Some(Protocol::Meta),
            "memcached 1.6 is spoken to in meta"
        );
    }
    (tally, counts)
}

#[test]
fn meta_no_reply_reaches_another_request_under_every_fault() {
    let (tally, counts) = run(Protocol::Meta, every_fault(), "meta, every fault");
    assert!(tally.ops > 1_000, "{tally:?}");
    assert!(
        counts.duplicated_now > 0
            && counts.duplicated_later > 0
            && counts.replayed > 0
            && counts.carried_part > 0,
        "{counts:?}"
    );
    assert_eq!(tally.wrong, 0, "wrong answers: {:#?}", tally.examples);
    // The faults were noticed: mismatched replies are protocol errors.
    assert!(
        tally.errors.get("Protocol").copied().unwrap_or(0) > 0,
        "{tally:?}"
    );
}

#[test]
fn auto_finds_meta_and_no_reply_reaches_another_request() {
    let (tally, _) = run(
        Protocol::Auto,
        every_fault().seed(7),
        "auto (meta), every fault",
    );
    assert!(tally.ops > 1_000, "{tally:?}");
    assert_eq!(tally.wrong, 0, "wrong answers: {:#?}", tally.examples);
}

#[test]
fn classic_no_reply_reaches_another_request_under_the_faults_it_can_detect() {
    let (tally, counts) = run(
        Protocol::Classic,
        classic_detectable_faults(),
        "classic, detectable faults",
    );
    assert!(tally.ops > 1_000, "{tally:?}");
    assert!(
        counts.duplicated_now > 0 && counts.garbage > 0,
        "{counts:?}"
    );
    assert_eq!(tally.wrong, 0, "wrong answers: {:#?}", tally.examples);
}

#[test]
fn classic_no_reply_reaches_another_request_when_trickled() {
    let (tally, counts) = run(
        Protocol::Classic,
        classic_trickle_faults(),
        "classic, trickled replies",
    );
    assert!(tally.ops > 1_000, "{tally:?}");
    assert!(counts.trickled > 0, "{counts:?}");
    assert_eq!(tally.wrong, 0, "wrong answers: {:#?}", tally.examples);
}

/// Waits until the proxy's write of another late duplicate has returned (more than
/// `written`), then a moment more: the duplicate of the reply just read is then in the
/// client's socket. A fixed pause (40 ms against the proxy's 30 ms) lost that race on a
/// loaded machine, and so did waiting on the count the proxy bumps just before its write
/// (CI at ccc7d7e: the proxy's thread was preempted between the two, and the duplicate of
/// `STORED` met the next get in flight, which is another test's subject). The extra
/// 10 ms covers loopback delivery that the kernel defers to its softirq thread.
fn await_late_duplicate(proxy: &FaultProxy, written: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.counts().duplicated_later_written <= written {
        assert!(
            Instant::now() < deadline,
            "no late duplicate written in 10 s: {:?}",
            proxy.counts()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn classic_late_duplicates_on_idle_connections_are_never_read() {
    // Every reply duplicated 30 ms later, one thread at a time, each request sent only once
    // the duplicate of the reply before it is out: the duplicate always lands on an idle
    // pooled connection, which is checked before reuse.
    let (_server, proxy, t) = setup(Protocol::Classic);
    proxy.set_faults(Faults::none().duplicate_later(1_000_000));
    let mut wrong = 0;
    for i in 0..40u32 {
        let key = format!("idle:{}", i % 4);
        let value = format!("value {i}");
        let sent = proxy.counts().duplicated_later_written;
        match t.store(&Store::set(key.as_bytes(), value.as_bytes(), i, 0)) {
            Ok(StoreStatus::Stored) => {}
            other => panic!("set: {other:?}"),
        }
        await_late_duplicate(&proxy, sent);
        let sent = proxy.counts().duplicated_later_written;
        match t.get(key.as_bytes()) {
            Ok(Some(item)) if item.value == value.as_bytes() => {}
            Ok(other) => {
                wrong += 1;
                println!("get {key}: {other:?}");
            }
            Err(e) => panic!("get: {e}"),
        }
        await_late_duplicate(&proxy, sent);
    }
    assert_eq!(wrong, 0);
    assert!(
        proxy.counts().duplicated_later >= 40,
        "{:?}",
        proxy.counts()
    );
}

#[test]
fn classic_in_flight_duplicates_are_what_the_classic_protocol_cannot_catch() {
    // Measured, not asserted: a duplicate of `STORED` or of a number that arrives while the
    // next request is in flight is the same bytes as that request's own reply.
    let (tally, _) = run(
        Protocol::Classic,
        every_fault().seed(11),
        "classic, every fault (in-flight duplicates included)",
    );
    assert!(tally.ops > 1_000, "{tally:?}");
}

/// A segment sent twice mid-value ([`Faults::duplicate_part`]) puts bytes the client has
/// read already inside a value; when the value's length then ends on a line end, the value
/// looks whole and only the bytes after it show the fault. Such bytes fail the request in
/// both dialects (in meta too, though every header matched its tag). Values made of line
/// ends make such a value likely; 16 threads of gets and multi-gets, each value checked
/// whole: none has bytes that are not its own (1,534 did in one run when meta replies
/// followed by stray bytes stood).
#[test]
fn a_segment_sent_twice_mid_value_never_reaches_a_caller() {
    let (_server, proxy, t) = setup(Protocol::Meta);
    let value = newcache_tests::checked::line_end_value;
    let key = |thread: usize, k: usize| format!("seg:{thread}:{k}").into_bytes();
    for thread in 0..THREADS {
        for k in 0..8 {
            t.store(&Store::set(&key(thread, k), &value(thread, k), 0, 0))
                .expect("stored before any fault");
        }
    }
    proxy.set_faults(Faults::none().duplicate_part(300_000).seed(3));
    let until = Instant::now() + run_secs();
    let (wrong, reads) = (Mutex::new(Vec::new()), AtomicU64::new(0));
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (t, wrong, reads) = (&t, &wrong, &reads);
            s.spawn(move || {
                let keys: Vec<Vec<u8>> = (0..8).map(|k| key(thread, k)).collect();
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                let mut k = 0;
                while Instant::now() < until {
                    k = (k + 1) % 8;
                    reads.fetch_add(1, Ordering::Relaxed);
                    if let Ok(got) = t.get(&keys[k]) {
                        if got.map(|i| i.value) != Some(value(thread, k)) {
                            wrong.lock().unwrap().push(format!("get {thread}:{k}"));
                        }
                    }
                    if let Ok(items) = t.get_many(&refs) {
                        for (k, item) in items.into_iter().enumerate() {
                            if item.map(|i| i.value) != Some(value(thread, k)) {
                                wrong.lock().unwrap().push(format!("get_many {thread}:{k}"));
                            }
                        }
                    }
                }
            });
        }
    });
    let (wrong, counts) = (wrong.into_inner().unwrap(), proxy.counts());
    println!(
        "{} reads, {} wrong; proxy {counts:?}",
        reads.load(Ordering::Relaxed),
        wrong.len()
    );
    assert!(counts.duplicated_part > 100, "{counts:?}");
    assert!(
        wrong.is_empty(),
        "{} wrong: {:?}",
        wrong.len(),
        wrong.iter().take(5).collect::<Vec<_>>()
    );
}

/// `get_or_set` leaves no lease key behind when its replies are cut: one reply chunk in
/// three cut short, then, with no faults, the key deleted and read through again. A lease
/// key left by the faulty call (its `add` landed, its reply lost; or its release `delete`
/// failed) made that clean call wait out `lease_wait` for a lease nobody held: 51 of 200
/// tries took 2.0 to 3.0 s in an outside audit.
#[test]
fn get_or_set_leaves_no_lease_behind_when_replies_are_cut() {
    let m = Memcached::start();
    let proxy = FaultProxy::start(m.socket_addr(), Faults::none());
    let url = format!(
        "newcache://{}/?flavor=cut&read_timeout=300&write_timeout=300",
        proxy.addr()
    );
    let cache = newcache::Cache::from_url(&url).unwrap();
    let ttl = newcache::Ttl::Seconds(60);
    let mut slow = Vec::new();
    for i in 0..80u64 {
        let key = format!("cut:{i}");
        proxy.set_faults(Faults::none().truncate(330_000).seed(i));
        let _ = cache.get_or_set(&key, ttl, || "v".to_string());
        proxy.set_faults(Faults::none());
        cache.delete(&key).unwrap();
        let started = Instant::now();
        assert_eq!(
            cache.get_or_set(&key, ttl, || "v".to_string()).unwrap(),
            "v"
        );
        let took = started.elapsed();
        if took > Duration::from_secs(1) {
            slow.push((key, took));
        }
    }
    assert!(
        slow.is_empty(),
        "clean calls that waited for a lease: {slow:?}"
    );
}

/// A lease `add` that ran, its reply followed by bytes nobody asked for (a middlebox's
/// stray line): the call fails with the protocol error, and the lease it took is freed, so
/// the next cold call loads at once. It was left behind, and the next call waited it out
/// (an outside audit: 3.2 to 3.9 s), on every protocol; the blocking and the async cache
/// share this code.
#[test]
fn a_lease_add_answered_with_junk_after_it_leaves_no_lease_behind() {
    let (m, proxy, raw, url) = lease_scene(300);
    for protocol in ["meta", "classic"] {
        let cache =
            newcache::Cache::from_url(&format!("{}&protocol={protocol}", url(&proxy.addr())))
                .unwrap();
        let key = format!("junk-{protocol}");
        let lease = cache.lease_key(&key).unwrap();
        let ttl = newcache::Ttl::Seconds(60);
        proxy.junk_after_reply_to(b"newcache-lease", b"JUNK\r\n");
        let e = cache.get_or_set(&key, ttl, || "v".to_string()).unwrap_err();
        assert!(
            matches!(e, newcache::Error::Transport(Error::Protocol { .. })),
            "{protocol}: {e}"
        );
        assert_eq!(
            raw.get(&lease).unwrap(),
            None,
            "{protocol}: the lease freed"
        );
        let started = Instant::now();
        assert_eq!(
            cache.get_or_set(&key, ttl, || "w".to_string()).unwrap(),
            "w"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{protocol}: no lease waited out ({:?})",
            started.elapsed()
        );
        // The lease is another process's: its `add` refused (and junk after the reply), the
        // release's read of the lease key held up until it times out. The other's lease
        // stays. It was deleted on the failed read, and a third caller could load beside
        // its holder (a review).
        let key = format!("theirs-{protocol}");
        let lease = cache.lease_key(&key).unwrap();
        raw.store(&Store::set(&lease, b"another-process", 0, 60))
            .unwrap();
        proxy.junk_after_reply_to(b"newcache-lease", b"JUNK\r\n");
        let (read, never) = match protocol {
            "meta" => (&b"mg newcache-lease"[..], &b"md newcache-lease"[..]),
            _ => (&b"s newcache-lease"[..], &b"delete newcache-lease"[..]),
        };
        proxy.hold_request(read, never);
        assert!(cache.get_or_set(&key, ttl, || "v".to_string()).is_err());
        assert_eq!(
            raw.get(&lease).unwrap().map(|i| i.value),
            Some(b"another-process".to_vec()),
            "{protocol}: the other process's lease kept"
        );
        proxy.hold_request(b"never sent", b"never sent");
        // The caller's own lease, the release's first read cut: read again, and deleted.
        // Given up on the first broken read, it was left to cost the next cold call
        // `lease_wait` (a review: 4 s).
        let key = format!("cut-read-{protocol}");
        let lease = cache.lease_key(&key).unwrap();
        proxy.junk_after_reply_to(b"newcache-lease", b"JUNK\r\n");
        proxy.cut_reply_to(read);
        assert!(cache.get_or_set(&key, ttl, || "v".to_string()).is_err());
        assert_eq!(
            raw.get(&lease).unwrap(),
            None,
            "{protocol}: own lease freed"
        );
    }
    drop(m);
}

/// A memcached, a proxy in front of it, a transport straight to it (to look at lease keys),
/// and the URL of a cache at an address with `lease_wait` 5 s and the read and write
/// timeouts in ms.
fn lease_scene(
    timeout_ms: u64,
) -> (
    Memcached,
    FaultProxy,
    TextTransport,
    impl Fn(&str) -> String,
) {
    let m = Memcached::start();
    let proxy = FaultProxy::start(m.socket_addr(), Faults::none());
    let raw = TextTransport::new(TextConfig {
        servers: vec![m.addr()],
        ..TextConfig::default()
    })
    .expect("transport");
    let url = move |addr: &str| {
        format!("newcache://{addr}/?flavor=lost&read_timeout={timeout_ms}&write_timeout={timeout_ms}&lease_wait=5000")
    };
    (m, proxy, raw, url)
}

/// A cold `get_or_set` in one process while another holds the lease, the reply to its
/// lease `add` (refused: the lease is held) lost with its connection: it waits for the
/// holder's value, and the holder's lease stays, so a third caller waits too. It loaded at
/// once, a second loader run beside the holder's, and its release deleted the holder's
/// lease (an outside audit, 3 of 3 runs). Then a lost reply to an `add` that was stored:
/// the caller finds its own token, loads once, and frees the lease.
#[test]
fn a_lost_reply_to_a_lease_add_runs_no_second_loader_and_frees_no_other_lease() {
    let (m, proxy, raw, url) = lease_scene(300);
    let holder = newcache::Cache::from_url(&url(&m.addr())).unwrap();
    let cut = newcache::Cache::from_url(&url(&proxy.addr())).unwrap();
    // Another process (a cache of another name shares no single flight with the holder).
    let third = newcache::Cache::from_url(&format!("{}&name=third", url(&m.addr()))).unwrap();
    let ttl = newcache::Ttl::Seconds(60);
    let lease = holder.lease_key("k").unwrap();
    let runs = AtomicU64::new(0);
    let load = |what: &'static str| {
        runs.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1500));
        what.to_string()
    };
    std::thread::scope(|s| {
        let first = s.spawn(|| holder.get_or_set("k", ttl, || load("first")));
        let began = Instant::now();
        while raw.get(&lease).unwrap().is_none() {
            assert!(began.elapsed() < Duration::from_secs(2), "no lease taken");
            std::thread::sleep(Duration::from_millis(5));
        }
        proxy.cut_reply_to(b"newcache-lease");
        let second = s.spawn(|| cut.get_or_set("k", ttl, || load("second")));
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            raw.get(&lease).unwrap().is_some(),
            "the holder's lease kept"
        );
        let third = s.spawn(|| third.get_or_set("k", ttl, || load("third")));
        for (name, call) in [("holder", first), ("cut", second), ("third", third)] {
            assert_eq!(call.join().unwrap().unwrap(), "first", "{name}");
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one loader run");
    assert_eq!(raw.get(&lease).unwrap(), None, "the lease freed");

    // The lost reply was to an `add` that stored: the caller's own lease.
    proxy.cut_reply_to(b"newcache-lease");
    assert_eq!(cut.get_or_set("j", ttl, || load("own")).unwrap(), "own");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one more run");
    assert_eq!(
        raw.get(&cut.lease_key("j").unwrap()).unwrap(),
        None,
        "freed"
    );
    let started = Instant::now();
    cut.delete("j").unwrap();
    assert_eq!(cut.get_or_set("j", ttl, || load("again")).unwrap(), "again");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no lease waited out"
    );
}

/// A connection cut after a command ran, before its reply: an I/O error that says the
/// command may have run, on both caches. A close without a reply was read as a proxy
/// refusing the command (twemproxy closes the connection on what it does not proxy)
/// whenever the server still answered `version`: `clear` and `incr` said "not supported"
/// (`Unsupported`) after the flush and the increment had run (an outside audit). A server
/// that answers a command nobody knows with `ERROR`, as memcached does, is not such a
/// proxy; twemproxy's refusals stay `Unsupported` (tests/tests/twemproxy.rs).
#[test]
fn a_connection_cut_after_a_command_ran_says_it_may_have_run() {
    use newcache::{Error as CacheError, SetOptions, Ttl};
    let m = Memcached::start();
    let proxy = FaultProxy::start(m.socket_addr(), Faults::none());
    let direct = newcache::Cache::from_url(&format!("newcache://{}/", m.addr())).unwrap();
    let may_have_run = |e: &CacheError, what: &str| {
        assert!(
            matches!(e, CacheError::Transport(Error::Io { .. })),
            "{what}: {e:?}"
        );
        assert!(
            e.to_string().contains("may or may not have run"),
            "{what}: {e}"
        );
    };
    for (protocol, incr) in [
        ("classic", &b"incr "[..]),
        ("meta", b"ma "),
        ("auto", b"ma "),
    ] {
        let url = format!(
            "newcache://{}/?protocol={protocol}&read_timeout=300&write_timeout=300",
            proxy.addr()
        );
        // The first command of a new cache: an increment.
        let cache = newcache::Cache::from_url(&url).unwrap();
        direct
            .set("n", &100u64, SetOptions::new(Ttl::Forever).no_herd())
            .unwrap();
        proxy.cut_reply_to(incr);
        let e = cache.incr("n", 1).unwrap_err();
        may_have_run(&e, protocol);
        assert_eq!(
            direct.get::<u64>("n").unwrap(),
            Some(101),
            "{protocol}: it ran"
        );
        // A flush.
        direct.set("sentinel", "v", Ttl::Forever).unwrap();
        proxy.cut_reply_to(b"flush_all");
        let e = cache.clear().unwrap_err();
        may_have_run(&e, protocol);
        assert_eq!(
            direct.get::<String>("sentinel").unwrap(),
            None,
            "{protocol}: it ran"
        );
        // The async cache's flush.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let cache = newcache::AsyncCache::from_url(&url).unwrap();
            assert_eq!(cache.get::<String>("sentinel").await.unwrap(), None);
            direct.set("sentinel", "v", Ttl::Forever).unwrap();
            proxy.cut_reply_to(b"flush_all");
            let e = cache.clear().await.unwrap_err();
            may_have_run(&e, protocol);
        });
        assert_eq!(
            direct.get::<String>("sentinel").unwrap(),
            None,
            "{protocol}: it ran"
        );
    }
}

/// A lease `add` that times out on its way and lands late, after the caller's read of the
/// lease key (on another connection) found none: the caller's second `add` is refused by
/// its own lease. It is the holder: it loads at once. It waited its own lease out as if
/// another process held it (an outside audit: 4 s at `lease_wait` 3 s).
#[test]
fn a_lease_add_that_lands_late_is_the_callers_own_lease() {
    for protocol in ["classic", "meta"] {
        let m = Memcached::start();
        let proxy = FaultProxy::start(m.socket_addr(), Faults::none());
        let url = format!(
            "newcache://{}/?protocol={protocol}&read_timeout=300&write_timeout=300&lease_wait=3000",
            proxy.addr()
        );
        let cache = newcache::Cache::from_url(&url).unwrap();
        proxy.hold_request(b"newcache-lease", b"newcache-lease");
        let started = Instant::now();
        let got = cache
            .get_or_set("k", newcache::Ttl::Seconds(60), || "loaded".to_string())
            .unwrap();
        let took = started.elapsed();
        assert_eq!(got, "loaded", "{protocol}");
        // The add's timeout (300 ms) and a few round trips; not the lease's 4 s.
        assert!(took < Duration::from_millis(1500), "{protocol}: {took:?}");
    }
}

/// While another process holds a cold key's lease, one lost reply to a read of the leader
/// in this process fails that leader alone: the callers waiting for it are served the
/// other process's value. They failed with `LoadFailed` (an outside audit: 7 of 8 callers),
/// though no loader ran here and nothing failed to store.
#[test]
fn one_lost_reply_to_a_cold_leader_does_not_fail_its_waiters() {
    let (m, proxy, raw, url) = lease_scene(1000);
    let holder = newcache::Cache::from_url(&url(&m.addr())).unwrap();
    let here = newcache::Cache::from_url(&url(&proxy.addr())).unwrap();
    let ttl = newcache::Ttl::Seconds(60);
    let lease = holder.lease_key("k").unwrap();
    let wire = here.wire_key("k").unwrap();
    let runs_here = AtomicU64::new(0);
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            holder.get_or_set("k", ttl, || {
                std::thread::sleep(Duration::from_millis(1500));
                "held".to_string()
            })
        });
        let began = Instant::now();
        while raw.get(&lease).unwrap().is_none() {
            assert!(began.elapsed() < Duration::from_secs(2), "no lease taken");
            std::thread::sleep(Duration::from_millis(5));
        }
        let callers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    here.get_or_set("k", ttl, || {
                        runs_here.fetch_add(1, Ordering::SeqCst);
                        "here".to_string()
                    })
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        proxy.cut_reply_to(&wire);
        let got: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        assert_eq!(first.join().unwrap().unwrap(), "held");
        let served = got
            .iter()
            .filter(|g| matches!(g, Ok(v) if v == "held"))
            .count();
        assert!(served >= 7, "{got:?}");
        assert!(
            !got.iter()
                .any(|g| matches!(g, Err(newcache::Error::LoadFailed { .. }))),
            "{got:?}"
        );
    });
    assert_eq!(runs_here.load(Ordering::SeqCst), 0, "no load here");
}

/// A large request to a server that reads it slowly fails within the write timeout, however
/// many writes it takes. The socket's write timeout bounded each write, and each write
/// that made progress began it again: a 20 MB set to a server reading 640 KB/s failed after
/// 32 s with a 300 ms write timeout (an outside audit).
#[test]
fn a_request_the_server_reads_slowly_fails_within_the_write_timeout() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let reader_done = done.clone();
    // A server that reads 64 KB every 100 ms and never answers.
    let reader = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut chunk = vec![0u8; 64 * 1024];
        while !reader_done.load(Ordering::Relaxed) {
            if matches!(socket.read(&mut chunk), Ok(0) | Err(_)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let transport = TextTransport::new(TextConfig {
        servers: vec![addr.to_string()],
        write_timeout: Duration::from_millis(300),
        read_timeout: Duration::from_millis(300),
        protocol: Protocol::Classic,
        item_size_limit: 32 << 20,
        ..TextConfig::default()
    })
    .unwrap();
    let value = vec![b'x'; 20 << 20];
    let started = Instant::now();
    let stored = transport.store(&Store::set(b"big", &value, 0, 0));
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    assert!(matches!(stored, Err(Error::Timeout { .. })), "{stored:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    drop(transport);
    reader.join().unwrap();
}
