//! The async text transport ([`TokioTextTransport`]) against real memcached, what its
//! design promises measured from outside:
//! - **pipelining**: 64 tasks reading at once share one connection, and their requests go
//!   out in far fewer writes than requests (counted by the transport and, as the reads of
//!   a relaying proxy, outside it);
//! - **cancellation**: requests dropped mid-flight (under `tokio::time::timeout`) leave the
//!   connection in step: every later read on the same connection returns its own key's
//!   value;
//! - **faults**: through [`FaultProxy`] (duplicated, replayed, garbled, truncated, delayed
//!   and trickled replies) 16 tasks of mixed operations on values that carry their own key
//!   never get another request's value or status (errors are fine), nor does one task
//!   alone, which reads its own replies (the direct path);
//! - **a hung server** (SIGSTOP): the requests in flight fail within the read timeout, and
//!   after SIGCONT requests work again on a new connection;
//! - failover, unix-domain sockets, TLS refused without its feature, lazy connecting.
//!
//! `NEWCACHE_FAULT_SECS` sets each fault run's length (default 3 s).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use newcache_testkit::proxy::{FaultProxy, Faults};
use newcache_testkit::Memcached;
use newcache_tests::checked::Rng;
use newcache_transport::{AsyncTransport, Error, Store, StoreStatus};
use newcache_transport_text::{Failover, Protocol, TextConfig, TokioTextTransport};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn transport(
    servers: Vec<String>,
    read_timeout: Duration,
    protocol: Protocol,
) -> TokioTextTransport {
    TokioTextTransport::new(TextConfig {
        servers,
        read_timeout,
        write_timeout: read_timeout,
        protocol,
        ..TextConfig::default()
    })
    .expect("transport")
}

/// How many bytes of padding `value` has past its key and number.
fn padding(value: &[u8]) -> usize {
    value
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'|')
        .nth(1)
        .map_or(0, |(i, _)| value.len() - i - 1)
}

/// `<key>|<n>|<padding>`: a value that names its key.
fn value_of(key: &[u8], n: u64, pad: usize) -> Vec<u8> {
    let mut v = key.to_vec();
    v.extend_from_slice(format!("|{n}|").as_bytes());
    v.resize(v.len() + pad, b'x');
    v
}

/// The key and number a value names.
fn parse_value(v: &[u8]) -> Option<(Vec<u8>, u64)> {
    let mut fields = v.splitn(3, |&b| b == b'|');
    let key = fields.next()?.to_vec();
    let n = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    Some((key, n))
}

#[test]
fn sixty_four_tasks_share_one_connection_in_few_writes() {
    const TASKS: usize = 64;
    const ROUNDS: usize = 20;
    let server = Memcached::start();
    let proxy = FaultProxy::start(server.socket_addr(), Faults::none());
    let t = transport(vec![proxy.addr()], Duration::from_secs(2), Protocol::Auto);
    let rt = runtime();
    let keys: Vec<Vec<u8>> = (0..TASKS)
        .map(|i| format!("pipe:{i}").into_bytes())
        .collect();
    let values: Vec<Vec<u8>> = keys.iter().map(|k| value_of(k, 1, 10)).collect();
    rt.block_on(async {
        let stores: Vec<Store<'_>> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| Store::set(k, v, 0, 0))
            .collect();
        let statuses = t.store_many(&stores).await.expect("store_many");
        assert!(statuses.iter().all(|s| s.is_stored()));
    });
    let before = t.io_stats();
    let reads_before = proxy.counts().client_reads;
    let keys = Arc::new(keys);
    let values = Arc::new(values);
    for _ in 0..ROUNDS {
        rt.block_on(async {
            let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
            let handles: Vec<_> = (0..TASKS)
                .map(|i| {
                    let (t, barrier, keys) = (t.clone(), barrier.clone(), keys.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        t.get(&keys[i]).await
                    })
                })
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                let item = h.await.expect("task").expect("get").expect("a hit");
                assert_eq!(item.value, values[i], "task {i} got another value");
            }
        });
    }
    let after = t.io_stats();
    let requests = after.requests - before.requests;
    let writes = after.writes - before.writes;
    let reads = proxy.counts().client_reads - reads_before;
    println!(
        "{requests} gets by {TASKS} tasks x {ROUNDS} rounds: {writes} writes ({:.1} requests a write), {reads} reads at the proxy, {} connection(s)",
        requests as f64 / writes.max(1) as f64,
        after.connections
    );
    assert_eq!(requests, (TASKS * ROUNDS) as u64);
    assert_eq!(after.connections, 1, "one connection carried everything");
    assert_eq!(proxy.counts().connections, 1);
    // Well below one write per request: at least four requests a write on average, seen
    // from the transport and from the other end of the socket.
    assert!(
        writes * 4 <= requests,
        "{writes} writes for {requests} requests"
    );
    assert!(
        reads * 4 <= requests,
        "{reads} reads at the proxy for {requests} requests"
    );
}

#[test]
fn requests_dropped_mid_flight_leave_the_connection_in_step() {
    const KEYS: usize = 100;
    let server = Memcached::start();
    let proxy = FaultProxy::start(server.socket_addr(), Faults::none());
    // A read timeout far above the delays: nothing here may close the connection.
    let t = transport(vec![proxy.addr()], Duration::from_secs(5), Protocol::Auto);
    let rt = runtime();
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..KEYS)
            .map(|i| format!("cancel:{i}").into_bytes())
            .collect(),
    );
    rt.block_on(async {
        for (i, k) in keys.iter().enumerate() {
            let v = value_of(k, i as u64, 20);
            t.store(&Store::set(k, &v, 0, 0)).await.expect("set");
        }
    });
    // Every reply held back for up to 20 ms: gets given 0 to 8 ms are mostly dropped after
    // their request was written, their replies still to come.
    proxy.set_faults(Faults::none().delayed(1_000_000, Duration::from_millis(20)));
    let before = t.io_stats();
    let cancelled = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let handles: Vec<_> = (0..16u64)
            .map(|task| {
                let (t, keys) = (t.clone(), keys.clone());
                let (cancelled, answered) = (cancelled.clone(), answered.clone());
                tokio::spawn(async move {
                    for n in 0..40u64 {
                        let i = ((task * 40 + n) * 7 % KEYS as u64) as usize;
                        let limit = Duration::from_micros((task * 131 + n * 977) % 8_000);
                        match tokio::time::timeout(limit, t.get(&keys[i])).await {
                            Err(_) => {
                                cancelled.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(got) => {
                                let item = got.expect("get").expect("a hit");
                                let (key, _) = parse_value(&item.value).expect("our value");
                                assert_eq!(key, keys[i], "another key's value");
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
    });
    let mid = t.io_stats();
    let written = mid.requests - before.requests;
    let (cancelled, answered) = (
        cancelled.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
    );
    proxy.set_faults(Faults::none());
    // Every later get, on the same connection, answers its own key.
    rt.block_on(async {
        let handles: Vec<_> = (0..8u64)
            .map(|task| {
                let (t, keys) = (t.clone(), keys.clone());
                tokio::spawn(async move {
                    for n in 0..50u64 {
                        let i = ((task * 50 + n) * 3 % KEYS as u64) as usize;
                        let item = t.get(&keys[i]).await.expect("get").expect("a hit");
                        assert_eq!(parse_value(&item.value), Some((keys[i].clone(), i as u64)));
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
    });
    let after = t.io_stats();
    println!(
        "{cancelled} gets dropped mid-flight, {answered} answered; {written} requests written ({} dropped after they were written, their replies read and thrown away); then 400 gets all answered right; {} connection(s)",
        written.saturating_sub(answered),
        after.connections
    );
    assert!(cancelled >= 100, "only {cancelled} gets were dropped");
    assert!(
        written >= answered + 50,
        "{written} written, {answered} answered: too few were dropped after being written"
    );
    assert_eq!(after.connections, 1, "the connection was never closed");
    assert_eq!(proxy.counts().connections, 1);
}

/// What a run of mixed operations saw.
#[derive(Debug, Default)]
struct Tally {
    ops: u64,
    errors: BTreeMap<String, u64>,
    wrong: Vec<String>,
}

fn error_kind(e: &Error) -> String {
    let debug = format!("{e:?}");
    let end = debug.find([' ', '{', '(']).unwrap_or(debug.len());
    debug[..end].to_string()
}

/// How many keys each task stores before the faults and never writes again: a miss of one
/// is a wrong answer (a stray reply taken for its miss), where a miss of a key the task
/// writes and deletes proves nothing.
const KEPT: usize = 4;

/// The `i`th kept key of `task`, holding `value_of(key, 1, 16)`.
fn kept_key(task: u64, i: usize) -> Vec<u8> {
    format!("mix:{task}:kept:{i}").into_bytes()
}

/// One task's run: mixed operations on its own keys until `until`, every answer checked;
/// its kept keys ([`KEPT`]) are read among them and never miss.
async fn mixed(t: TokioTextTransport, task: u64, until: Instant, meta: bool) -> Tally {
    let mut tally = Tally::default();
    let keys: Vec<Vec<u8>> = (0..30)
        .map(|i| format!("mix:{task}:{i}").into_bytes())
        .collect();
    let never = format!("mix:{task}:never-written").into_bytes();
    let kept: Vec<Vec<u8>> = (0..KEPT).map(|i| kept_key(task, i)).collect();
    let counter = format!("mix:{task}:counter").into_bytes();
    let base = task * 1_000_000_000;
    // The highest number written to each key so far (a value may be any one written).
    let mut written = vec![0u64; keys.len()];
    let mut next = 0u64;
    let mut last_count = base;
    let mut adds = 0u64;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (task + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut rand = move |n: u64| {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    };
    let mut bad: Vec<String> = Vec::new();
    // The whole value is checked, its padding too: a value with another reply's bytes in
    // it (a segment sent twice, mid-value) is as wrong as another key's.
    let check = |key: &[u8], value: &[u8], max: u64, bad: &mut Vec<String>| match parse_value(value)
    {
        Some((k, n)) if k == key && n <= max && value == value_of(key, n, padding(value)) => {}
        other => bad.push(format!(
            "task {task}: {:?} answered {:?}",
            String::from_utf8_lossy(key),
            other.map(|(k, n)| (String::from_utf8_lossy(&k).into_owned(), n))
        )),
    };
    // A kept key's read: its own value, never a miss.
    let check_kept = |key: &[u8], got: Option<&[u8]>, how: &str, bad: &mut Vec<String>| match got {
        Some(value) => check(key, value, 1, bad),
        None => bad.push(format!(
            "task {task}: kept key {:?} missed in {how}",
            String::from_utf8_lossy(key)
        )),
    };
    while Instant::now() < until {
        tally.ops += 1;
        let k = rand(keys.len() as u64) as usize;
        let key = &keys[k];
        let op = rand(if meta { 10 } else { 9 });
        let result: Result<(), Error> = async {
            match op {
                0 => {
                    next += 1;
                    written[k] = written[k].max(next);
                    // Sometimes a value large enough to be read straight into its buffer.
                    let pad = match rand(50) {
                        0 => 20_000 + rand(20_000) as usize,
                        _ => rand(200) as usize,
                    };
                    let v = value_of(key, next, pad);
                    let status = t.store(&Store::set(key, &v, 0, 0)).await?;
                    if status != StoreStatus::Stored {
                        bad.push(format!("task {task}: set answered {status:?}"));
                    }
                }
                1 if rand(3) == 0 => {
                    let key = &kept[rand(KEPT as u64) as usize];
                    let got = t.get(key).await?;
                    check_kept(key, got.as_ref().map(|i| &i.value[..]), "a get", &mut bad);
                }
                1 => {
                    if let Some(item) = t.get(key).await? {
                        check(key, &item.value, written[k], &mut bad);
                    }
                }
                2 => {
                    let n = 1 + rand(40) as usize;
                    let mut asked: Vec<&[u8]> = (0..n)
                        .map(|_| keys[rand(keys.len() as u64) as usize].as_slice())
                        .collect();
                    asked.push(&never);
                    let at = rand(asked.len() as u64 + 1) as usize;
                    asked.insert(at, &kept[rand(KEPT as u64) as usize]);
                    let items = t.get_many(&asked).await?;
                    for (a, item) in asked.iter().zip(items) {
                        let is_kept = kept.iter().any(|x| x.as_slice() == *a);
                        match item {
                            Some(item) if *a == never.as_slice() => bad.push(format!(
                                "task {task}: the never-written key answered {:?}",
                                String::from_utf8_lossy(&item.value)
                            )),
                            got if is_kept => check_kept(
                                a,
                                got.as_ref().map(|i| &i.value[..]),
                                "a multi-get",
                                &mut bad,
                            ),
                            Some(item) => {
                                let i = keys.iter().position(|x| x.as_slice() == *a).unwrap_or(0);
                                check(a, &item.value, written[i], &mut bad);
                            }
                            None => {}
                        }
                    }
                }
                3 => {
                    t.delete(key).await?;
                }
                4 => match t.incr(&counter, 1).await? {
                    Some(n) if n > last_count && n < base + 100_000_000 => last_count = n,
                    other => bad.push(format!(
                        "task {task}: incr answered {other:?} after {last_count}"
                    )),
                },
                5 => {
                    t.touch(key, 600).await?;
                }
                6 => {
                    let n = 2 + rand(5) as usize;
                    let picks: Vec<usize> =
                        (0..n).map(|_| rand(keys.len() as u64) as usize).collect();
                    let vals: Vec<Vec<u8>> = picks
                        .iter()
                        .map(|&i| {
                            next += 1;
                            written[i] = written[i].max(next);
                            value_of(&keys[i], next, 8)
                        })
                        .collect();
                    let stores: Vec<Store<'_>> = picks
                        .iter()
                        .zip(&vals)
                        .map(|(&i, v)| Store::set(&keys[i], v, 0, 0))
                        .collect();
                    let statuses = t.store_many(&stores).await?;
                    if statuses.iter().any(|s| *s != StoreStatus::Stored) {
                        bad.push(format!("task {task}: store_many answered {statuses:?}"));
                    }
                }
                8 => {
                    let n = 1 + rand(6) as usize;
                    let picks: Vec<&[u8]> = (0..n)
                        .map(|_| keys[rand(keys.len() as u64) as usize].as_slice())
                        .collect();
                    t.delete_many_quiet(&picks).await?;
                }
                7 => {
                    adds += 1;
                    let fresh = format!("mix:{task}:add:{adds}").into_bytes();
                    let v = value_of(&fresh, 1, 4);
                    let status = t
                        .store(
                            &Store::set(&fresh, &v, 0, 0)
                                .with_mode(newcache_transport::StoreMode::Add),
                        )
                        .await?;
                    if status != StoreStatus::Stored {
                        bad.push(format!(
                            "task {task}: add of a fresh key answered {status:?}"
                        ));
                    }
                }
                _ if rand(3) == 0 => {
                    let key = &kept[rand(KEPT as u64) as usize];
                    let got = t.meta_get(key, 30).await?;
                    check_kept(
                        key,
                        got.as_ref().map(|m| &m.item.value[..]),
                        "a meta get",
                        &mut bad,
                    );
                }
                _ => {
                    if let Some(m) = t.meta_get(key, 30).await? {
                        check(key, &m.item.value, written[k], &mut bad);
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            *tally.errors.entry(error_kind(&e)).or_default() += 1;
        }
    }
    tally.wrong = bad;
    tally
}

/// 16 tasks of mixed operations through the fault proxy for the run's length.
fn fault_run(
    protocol: Protocol,
    faults: Faults,
    tasks: u64,
    what: &str,
) -> (Tally, newcache_testkit::proxy::FaultCounts, u64) {
    let secs = std::env::var("NEWCACHE_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    let server = Memcached::start();
    let proxy = FaultProxy::start(server.socket_addr(), Faults::none());
    let t = transport(vec![proxy.addr()], Duration::from_millis(300), protocol);
    let rt = runtime();
    // The counters start clean, and the kept keys hold their values, before any fault.
    rt.block_on(async {
        for task in 0..tasks {
            let counter = format!("mix:{task}:counter").into_bytes();
            let start = (task * 1_000_000_000).to_string();
            t.store(&Store::set(&counter, start.as_bytes(), 0, 0))
                .await
                .expect("counter");
            for i in 0..KEPT {
                let key = kept_key(task, i);
                t.store(&Store::set(&key, &value_of(&key, 1, 16), 0, 0))
                    .await
                    .expect("kept key");
            }
        }
    });
    proxy.set_faults(faults);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let meta = protocol != Protocol::Classic;
    let tallies: Vec<Tally> = rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|task| tokio::spawn(mixed(t.clone(), task, until, meta)))
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("task"));
        }
        out
    });
    let mut tally = Tally::default();
    for t in tallies {
        tally.ops += t.ops;
        for (k, n) in t.errors {
            *tally.errors.entry(k).or_default() += n;
        }
        tally.wrong.extend(t.wrong);
    }
    let counts = proxy.counts();
    println!(
        "{what}: {} ops in {:.1} s, {} wrong, errors {:?}, {} connections; proxy {counts:?}",
        tally.ops,
        started.elapsed().as_secs_f64(),
        tally.wrong.len(),
        tally.errors,
        t.io_stats().connections
    );
    for w in tally.wrong.iter().take(20) {
        println!("  wrong: {w}");
    }
    (tally, counts, t.io_stats().direct)
}

/// Every fault. Pipelined replies come many to a chunk (a few thousand chunks in a few
/// seconds), so the rates are five times the blocking fault test's, for dozens of each.
fn every_fault() -> Faults {
    Faults::none()
        .duplicate_now(20_000)
        .duplicate_part(20_000)
        .carry_part(20_000)
        .stray_line(10_000)
        .duplicate_later(20_000)
        .replay_old(15_000)
        .garbage(5_000)
        .truncate(5_000)
        .delayed(10_000, Duration::from_millis(300))
        .trickle(20_000)
}

#[test]
fn meta_no_reply_reaches_another_request_under_every_fault() {
    let (tally, counts, _) = fault_run(Protocol::Meta, every_fault(), 16, "meta, every fault");
    assert!(tally.ops > 1_000, "{tally:?}");
    assert!(
        counts.duplicated_now > 0
            && counts.duplicated_part > 0
            && counts.carried_part > 0
            && counts.duplicated_later > 0
            && counts.replayed > 0,
        "{counts:?}"
    );
    no_wrong_answer_and_the_faults_noticed(&tally);
}

/// No request got another's answer, and the faults were noticed: mismatched replies are
/// protocol errors.
fn no_wrong_answer_and_the_faults_noticed(tally: &Tally) {
    assert!(tally.wrong.is_empty(), "wrong answers: {:#?}", tally.wrong);
    assert!(
        tally.errors.get("Protocol").copied().unwrap_or(0) > 0,
        "{tally:?}"
    );
}

/// A segment sent twice mid-value (a middlebox's fault, [`Faults::duplicate_part`]) puts
/// bytes the client has read already inside a value. When the value's length then ends on a
/// line end, the value looks whole: only what follows it shows the fault (older replies'
/// tokens, or no reply at all). So a reply is handed over only once what follows it checks
/// out. Values made of line ends make such a value likely; pipelined gets of 32 tasks, each
/// value checked whole: none has another reply's bytes in it.
#[test]
fn a_segment_sent_twice_mid_value_never_reaches_a_caller() {
    let (reads, counts) = read_known_values_under(
        Faults::none().duplicate_part(300_000).seed(3),
        Protocol::Meta,
        32,
        |task, k| format!("seg:{task}:{k}").into_bytes(),
        newcache_tests::checked::line_end_value,
    );
    assert!(counts.duplicated_part > 100, "{counts:?}");
    reads.none_wrong();
}

/// What gets of keys that all hold known values came back as.
#[derive(Debug, Default)]
struct Reads {
    gets: u64,
    errors: u64,
    /// A miss, or another value: every key holds its own.
    wrong: Vec<String>,
}

impl Reads {
    fn none_wrong(&self) {
        assert!(
            self.wrong.is_empty(),
            "{} wrong answers of {} gets: {:#?}",
            self.wrong.len(),
            self.gets,
            self.wrong.iter().take(5).collect::<Vec<_>>()
        );
    }
}

/// Stores `value(task, k)` under `key(task, k)`, 8 keys for each of `tasks` tasks, with no
/// fault; then under `faults` every task gets its keys in turn for 3 s on one async text
/// transport speaking `protocol`, each answer checked whole (a miss is wrong too).
fn read_known_values_under(
    faults: Faults,
    protocol: Protocol,
    tasks: usize,
    key: fn(usize, usize) -> Vec<u8>,
    value: fn(usize, usize) -> Vec<u8>,
) -> (Reads, newcache_testkit::proxy::FaultCounts) {
    let server = Memcached::start();
    let proxy = FaultProxy::start(server.socket_addr(), Faults::none());
    let t = transport(vec![proxy.addr()], Duration::from_millis(300), protocol);
    let rt = runtime();
    rt.block_on(async {
        for task in 0..tasks {
            for k in 0..8 {
                t.store(&Store::set(&key(task, k), &value(task, k), 0, 0))
                    .await
                    .expect("stored before any fault");
            }
        }
    });
    proxy.set_faults(faults);
    let until = Instant::now() + Duration::from_secs(3);
    let reads = rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let t = t.clone();
                tokio::spawn(async move {
                    let mut reads = Reads::default();
                    let mut k = 0;
                    while Instant::now() < until {
                        k = (k + 1) % 8;
                        let key = key(task, k);
                        reads.gets += 1;
                        match t.get(&key).await {
                            Ok(Some(item)) if item.value == value(task, k) => {}
                            Ok(other) => reads.wrong.push(format!(
                                "{}: {:?}",
                                String::from_utf8_lossy(&key),
                                other.map(|i| String::from_utf8_lossy(&i.value).into_owned())
                            )),
                            Err(_) => reads.errors += 1,
                        }
                    }
                    reads
                })
            })
            .collect();
        let mut total = Reads::default();
        for h in handles {
            let reads = h.await.expect("task");
            total.gets += reads.gets;
            total.errors += reads.errors;
            total.wrong.extend(reads.wrong);
        }
        total
    });
    let counts = proxy.counts();
    println!(
        "{} gets, {} errors, {} wrong (misses included); proxy {counts:?}",
        reads.gets,
        reads.errors,
        reads.wrong.len()
    );
    (reads, counts)
}

/// A lone caller reads its own replies (the direct path), and reads on past the runtime's
/// readiness while its reply is arriving: under every fault (chunks duplicated, replayed,
/// garbled, cut short, held back, trickled a byte at a time) it gets no wrong answer.
#[test]
fn a_lone_caller_reading_its_own_replies_gets_no_wrong_answer_under_every_fault() {
    let (tally, counts, direct) = fault_run(
        Protocol::Meta,
        every_fault().seed(11),
        1,
        "meta, one task, every fault",
    );
    // One request at a time, some held back 300 ms: a few thousand in the 3 s.
    assert!(tally.ops > 500, "{tally:?}");
    assert!(
        direct > 500,
        "the lone caller's requests took the direct path: {direct}"
    );
    assert!(
        counts.duplicated_now > 0 && counts.trickled > 0 && counts.delayed > 0,
        "{counts:?}"
    );
    no_wrong_answer_and_the_faults_noticed(&tally);
}

#[test]
fn auto_finds_meta_and_no_reply_reaches_another_request() {
    let (tally, _, _) = fault_run(
        Protocol::Auto,
        every_fault().seed(7),
        16,
        "auto, every fault",
    );
    assert!(tally.ops > 1_000, "{tally:?}");
    assert!(tally.wrong.is_empty(), "wrong answers: {:#?}", tally.wrong);
}

/// The classic protocol has no tags, so its requests are not pipelined: a job is written
/// only once nothing is in flight on its connection and no byte waits on it, and a reply
/// that comes with nothing in flight closes the connection. So the faults it can detect
/// (duplicates in the same write, stray reply lines, garbage, truncation, delays) give no
/// wrong answer under 16 tasks, as for the blocking transport's threads
/// (`tests/tests/fault_proxy.rs`). (Pipelined, a duplicated `STORED`, number or `END` was
/// taken for the next request's answer: 3 and 4 wrong answers in two 3 s runs of this
/// test.)
#[test]
fn classic_no_reply_reaches_another_request_under_the_faults_it_can_detect() {
    let faults = Faults::none()
        .duplicate_now(150_000)
        .stray_line(50_000)
        .garbage(5_000)
        .truncate(5_000)
        .delayed(10_000, Duration::from_millis(300));
    let (tally, counts, _) = fault_run(Protocol::Classic, faults, 16, "classic, detectable faults");
    assert!(tally.ops > 1_000, "{tally:?}");
    assert!(
        counts.duplicated_now > 0
            && counts.stray_lines > 0
            && counts.garbage > 0
            && counts.truncated > 0,
        "{counts:?}"
    );
    no_wrong_answer_and_the_faults_noticed(&tally);
}

/// In the classic protocol a connection carries one request at a time, so the connections
/// are a pool: a lone caller keeps to one, concurrent callers open more as they find them
/// all busy, up to `max_connections`, and every answer is right.
#[test]
fn classic_connections_are_a_pool_of_max_connections() {
    let server = Memcached::start();
    let t = TokioTextTransport::new(TextConfig {
        servers: vec![server.addr()],
        protocol: Protocol::Classic,
        max_connections: 4,
        ..TextConfig::default()
    })
    .expect("transport");
    let rt = runtime();
    let keys: Arc<Vec<Vec<u8>>> =
        Arc::new((0..32).map(|i| format!("pool:{i}").into_bytes()).collect());
    rt.block_on(async {
        for (i, k) in keys.iter().enumerate() {
            let v = value_of(k, i as u64, 0);
            t.store(&Store::set(k, &v, 0, 0)).await.expect("set");
        }
    });
    assert_eq!(t.io_stats().connections, 1, "one caller, one connection");
    let wrong = rt.block_on(async {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (t, keys) = (t.clone(), keys.clone());
                tokio::spawn(async move {
                    let mut wrong = 0;
                    for _ in 0..200 {
                        let item = t.get(&keys[i]).await.expect("get").expect("hit");
                        if parse_value(&item.value) != Some((keys[i].clone(), i as u64)) {
                            wrong += 1;
                        }
                    }
                    wrong
                })
            })
            .collect();
        let mut wrong = 0;
        for h in handles {
            wrong += h.await.expect("task");
        }
        wrong
    });
    assert_eq!(wrong, 0);
    let opened = t.io_stats().connections;
    assert!(
        (2..=4).contains(&opened),
        "32 concurrent callers opened {opened} connections (max_connections 4)"
    );
    let curr = server.stat("curr_connections");
    assert!(curr <= 4 + 2, "memcached counts {curr} connections");
}

/// In the classic protocol requests queue behind the one in flight on each connection. When
/// a hung server's connection fails at the read timeout, the requests queued behind it go
/// again on a new connection, but within their first deadline: every call ends within the
/// read timeout (they took up to two: 139 of 64 tasks' calls over 600 ms at 300 ms, an
/// outside audit).
#[test]
fn classic_calls_queued_behind_a_hung_server_end_within_the_read_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let mut server = Memcached::start();
    let t = TokioTextTransport::new(TextConfig {
        servers: vec![server.addr()],
        protocol: Protocol::Classic,
        read_timeout: TIMEOUT,
        max_connections: 4,
        ..TextConfig::default()
    })
    .expect("transport");
    let rt = runtime();
    rt.block_on(async {
        t.store(&Store::set(b"hung", b"v", 0, 0))
            .await
            .expect("set");
    });
    server.pause();
    let outcomes = concurrent_gets(&rt, &t, vec![b"hung".to_vec(); 64]);
    server.resume();
    let slowest = outcomes
        .iter()
        .map(|(took, _)| *took)
        .max()
        .unwrap_or_default();
    assert!(outcomes.iter().all(|(_, got)| got.is_err()), "{outcomes:?}");
    assert!(
        slowest < TIMEOUT + Duration::from_millis(150),
        "the slowest call took {slowest:?} at a {TIMEOUT:?} read timeout"
    );
}

/// A `set` whose caller gave up on it (a `tokio::time::timeout` of a millisecond or two)
/// may still run after the caller's next request, when that one goes on another
/// connection: memcached serves connections on several threads. In the classic protocol a
/// connection carries one request at a time, so the next request went on another (an
/// outside audit: 2,006 older values read back after 5,864 cancelled sets of 64 tasks); so
/// did meta's with `async_connections` 4 (20 in 7,598), also after a first fix that sent
/// everyone's requests to the first connection with an abandoned request on it (the
/// caller's own was on another). Each caller's next requests now go behind its own
/// abandoned one: after each cancelled set, a set of the next version and a get read that
/// version back.
#[test]
fn a_request_given_up_on_never_overtakes_the_callers_next_one() {
    for (protocol, connections) in [
        (Protocol::Classic, 1),
        (Protocol::Meta, 1),
        (Protocol::Meta, 4),
    ] {
        let server = Memcached::start();
        // Timeouts of 2 s: the test is of order, not timing, and 64 tasks on a 2-core
        // machine under a parallel build once took a set past the default 500 ms.
        let patient = Duration::from_secs(2);
        let t = TokioTextTransport::new(TextConfig {
            servers: vec![server.addr()],
            protocol,
            async_connections: connections,
            read_timeout: patient,
            write_timeout: patient,
            ..TextConfig::default()
        })
        .expect("transport");
        let rt = runtime();
        let until = Instant::now() + Duration::from_secs(2);
        let (cancelled, wrong) = rt.block_on(async {
            let handles: Vec<_> = (0..64u64)
                .map(|task| {
                    let t = t.clone();
                    tokio::spawn(async move {
                        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (task + 1));
                        let key = format!("order:{task}").into_bytes();
                        let (mut version, mut cancelled, mut wrong) = (0u64, 0u64, Vec::new());
                        while Instant::now() < until {
                            version += 1;
                            let v = version.to_string();
                            let patience = Duration::from_micros(rng.below(2_000));
                            let request = Store::set(&key, v.as_bytes(), 0, 0);
                            let set = t.store(&request);
                            if tokio::time::timeout(patience, set).await.is_ok() {
                                continue;
                            }
                            cancelled += 1;
                            version += 1;
                            let v = version.to_string();
                            t.store(&Store::set(&key, v.as_bytes(), 0, 0))
                                .await
                                .expect("the set after a cancelled one");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            let got = t.get(&key).await.expect("get").map(|i| i.value);
                            if got.as_deref() != Some(v.as_bytes()) {
                                wrong.push(format!(
                                    "{}: set {v}, read {:?}",
                                    String::from_utf8_lossy(&key),
                                    got.map(|g| String::from_utf8_lossy(&g).into_owned())
                                ));
                            }
                        }
                        (cancelled, wrong)
                    })
                })
                .collect();
            let (mut cancelled, mut wrong) = (0, Vec::new());
            for h in handles {
                let (c, w) = h.await.expect("task");
                cancelled += c;
                wrong.extend(w);
            }
            (cancelled, wrong)
        });
        let what = format!("{protocol:?}, async_connections {connections}");
        println!(
            "{what}: {cancelled} cancelled sets, {} older values read",
            wrong.len()
        );
        assert!(
            cancelled > 100,
            "{what}: only {cancelled} sets were cancelled"
        );
        assert!(
            wrong.is_empty(),
            "{what}: {} of {cancelled} sets given up on overwrote the next: {:?}",
            wrong.len(),
            wrong.iter().take(5).collect::<Vec<_>>()
        );
    }
}

/// A request its connection closed before writing (another request's reply was cut short)
/// is sent again on a new connection, up to four times within its deadline, not once: with
/// the classic protocol's small pool (4 connections, 64 tasks) and 2% of replies cut short,
/// 2,111 and 1,811 requests failed unsent ("the connection closed before the request could
/// be sent") for 698 cut replies in two 3 s runs; 36, 10 and 19 for about 700 now.
#[test]
fn requests_never_written_go_again_until_one_is_written() {
    let server = Memcached::start();
    let proxy = FaultProxy::start(server.socket_addr(), Faults::none());
    let t = TokioTextTransport::new(TextConfig {
        servers: vec![proxy.addr()],
        protocol: Protocol::Classic,
        read_timeout: Duration::from_millis(300),
        max_connections: 4,
        ..TextConfig::default()
    })
    .expect("transport");
    let rt = runtime();
    rt.block_on(async {
        t.store(&Store::set(b"unsent", b"v", 0, 0))
            .await
            .expect("set");
    });
    proxy.set_faults(Faults::none().truncate(20_000).seed(17));
    let until = Instant::now() + Duration::from_secs(3);
    let (gets, unsent) = rt.block_on(async {
        let handles: Vec<_> = (0..64)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move {
                    let (mut gets, mut unsent) = (0u64, 0u64);
                    while Instant::now() < until {
                        gets += 1;
                        if let Err(e) = t.get(b"unsent").await {
                            if e.to_string().contains("before the request could be sent") {
                                unsent += 1;
                            }
                        }
                    }
                    (gets, unsent)
                })
            })
            .collect();
        let (mut gets, mut unsent) = (0, 0);
        for h in handles {
            let (g, u) = h.await.expect("task");
            gets += g;
            unsent += u;
        }
        (gets, unsent)
    });
    let cut = proxy.counts().truncated;
    println!("{gets} gets, {cut} replies cut short, {unsent} requests failed unsent");
    assert!(cut > 50, "{cut} replies cut short");
    assert!(
        unsent * 4 < cut,
        "{unsent} requests failed unsent for {cut} replies cut short"
    );
}

/// Replies trickled a byte at a time (with garbage, truncation and delays) reach the
/// classic protocol's callers whole and right.
#[test]
fn classic_no_reply_reaches_another_request_when_trickled() {
    let faults = Faults::none()
        .trickle(20_000)
        .garbage(5_000)
        .truncate(5_000)
        .delayed(10_000, Duration::from_millis(300));
    let (tally, counts, _) = fault_run(Protocol::Classic, faults, 16, "classic, trickled");
    assert!(tally.ops > 1_000, "{tally:?}");
    assert!(counts.trickled > 0 && counts.garbage > 0, "{counts:?}");
    assert!(tally.wrong.is_empty(), "wrong answers: {:#?}", tally.wrong);
}

/// A get of each key, all in flight at once: how long each took and how it ended.
fn concurrent_gets(
    rt: &Runtime,
    t: &TokioTextTransport,
    keys: Vec<Vec<u8>>,
) -> Vec<(Duration, Result<(), Error>)> {
    rt.block_on(async {
        let handles: Vec<_> = keys
            .into_iter()
            .map(|key| {
                let t = t.clone();
                tokio::spawn(async move {
                    let begun = Instant::now();
                    let got = t.get(&key).await.map(|_| ());
                    (begun.elapsed(), got)
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("task"));
        }
        out
    })
}

#[test]
fn a_hung_server_fails_the_requests_in_flight_within_the_timeout_and_is_used_again() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let mut server = Memcached::start();
    let t = transport(vec![server.addr()], TIMEOUT, Protocol::Auto);
    let rt = runtime();
    let keys: Arc<Vec<Vec<u8>>> =
        Arc::new((0..16).map(|i| format!("hung:{i}").into_bytes()).collect());
    rt.block_on(async {
        for (i, k) in keys.iter().enumerate() {
            let v = value_of(k, i as u64, 0);
            t.store(&Store::set(k, &v, 0, 0)).await.expect("set");
        }
    });
    server.pause();
    let outcomes = concurrent_gets(&rt, &t, keys.to_vec());
    let slowest = outcomes.iter().map(|(d, _)| *d).max().unwrap_or_default();
    println!("16 gets in flight on the hung server: slowest failed after {slowest:?} (timeout {TIMEOUT:?})");
    for (took, got) in &outcomes {
        assert!(
            matches!(got, Err(Error::Timeout { .. })),
            "a get on the hung server: {got:?}"
        );
        // The timeout, plus what a loaded machine may take to run the timer's task.
        assert!(
            *took < TIMEOUT + Duration::from_millis(250),
            "failed after {took:?}"
        );
    }
    // The connection itself is closed for the silence (within a fraction of the timeout
    // more), so nothing waits on it.
    std::thread::sleep(TIMEOUT);
    server.resume();
    let deadline = Instant::now() + Duration::from_secs(5);
    rt.block_on(async {
        for (i, k) in keys.iter().enumerate() {
            loop {
                match t.get(k).await {
                    Ok(Some(item)) => {
                        assert_eq!(parse_value(&item.value), Some((k.clone(), i as u64)));
                        break;
                    }
                    Err(e) if Instant::now() < deadline => {
                        assert!(e.is_server_failure(), "{e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("the resumed server is not used again: {other:?}"),
                }
            }
        }
    });
    let stats = t.io_stats();
    println!(
        "after SIGCONT every get answered; {} connections opened in all",
        stats.connections
    );
    assert!(
        stats.connections >= 2,
        "the hung connection was replaced: {stats:?}"
    );
}

/// A server that accepts connections and never answers (a stopped memcached: the kernel
/// still completes the handshake), met by many callers at once before any connection is
/// open: one attempt to open (connect, probe) is made and every caller that waited for it
/// fails with its error, within the read timeout. Each waiter used to try again in turn
/// once the one before it failed, so the 24th failed after 24 read timeouts.
#[test]
fn callers_waiting_for_a_connection_that_cannot_open_fail_with_its_attempt() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    let mut server = Memcached::start();
    server.pause();
    let t = transport(vec![server.addr()], TIMEOUT, Protocol::Auto);
    let rt = runtime();
    let keys = (0..24).map(|i| format!("cold:{i}").into_bytes()).collect();
    let outcomes = concurrent_gets(&rt, &t, keys);
    let slowest = outcomes.iter().map(|(d, _)| *d).max().unwrap_or_default();
    println!("24 first gets of a server that never answers: slowest failed after {slowest:?}");
    for (took, got) in &outcomes {
        assert!(matches!(got, Err(Error::Timeout { .. })), "{got:?}");
        assert!(
            *took < TIMEOUT + Duration::from_millis(250),
            "failed after {took:?}"
        );
    }
    server.resume();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = t.get(b"cold:0").await {
            assert!(
                Instant::now() < deadline,
                "the resumed server is not used: {e}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// The runtime that opened a connection (and runs its task) shuts down while another
/// runtime's tasks have requests queued on it. A request whose answer the task took with
/// it may have run, so it fails and is not sent again: an `incr` was sometimes counted
/// twice (a counter up to 63 past the calls made, every call `Ok`).
#[test]
fn requests_whose_connection_task_ended_unanswered_are_not_sent_again() {
    let server = Memcached::start();
    // It happened in about half the runs: four of them.
    for round in 0..4 {
        let t = transport(
            vec![server.addr()],
            Duration::from_millis(300),
            Protocol::Auto,
        );
        let counter = format!("xrt:{round}").into_bytes();
        let (calls, oks, errors, value) = shut_down_under_incrs(&t, &counter);
        println!(
            "round {round}: {calls} incr calls: {oks} ok, {errors} failed; the counter is {value}"
        );
        assert!(oks > 0, "no incr went through");
        assert!(
            oks <= value && value <= calls,
            "{calls} calls, {oks} ok: the counter is {value}"
        );
    }
}

/// Opens `t`'s connection on a runtime, has 32 tasks of another runtime incr `counter`,
/// shuts the first runtime down under them: (calls, oks, errors, the counter's value).
fn shut_down_under_incrs(t: &TokioTextTransport, counter: &[u8]) -> (u64, u64, u64, u64) {
    let a = runtime();
    a.block_on(t.store(&Store::set(counter, b"0", 0, 0)))
        .expect("set, opening the connection on the first runtime");
    let b = runtime();
    let (calls, oks, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (t, calls, oks, errors, stop) = (
                t.clone(),
                calls.clone(),
                oks.clone(),
                errors.clone(),
                stop.clone(),
            );
            let counter = counter.to_vec();
            b.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    calls.fetch_add(1, Ordering::SeqCst);
                    match t.incr(&counter, 1).await {
                        Ok(Some(_)) => oks.fetch_add(1, Ordering::SeqCst),
                        Ok(None) => panic!("the counter is gone"),
                        Err(_) => errors.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    a.shutdown_timeout(Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let value = b.block_on(async {
        for h in handles {
            h.await.expect("task");
        }
        let item = t.get(counter).await.expect("get").expect("counter");
        String::from_utf8_lossy(&item.value)
            .parse::<u64>()
            .expect("a number")
    });
    (
        calls.load(Ordering::SeqCst),
        oks.load(Ordering::SeqCst),
        errors.load(Ordering::SeqCst),
        value,
    )
}

/// A connection's task runs on the runtime that opened it. When that runtime is kept but
/// no longer driven (an idle current-thread runtime), a lone request from another runtime
/// still fails within the read timeout, from its own runtime's timer, where it waited for
/// ever.
#[test]
fn a_lone_request_whose_connection_task_is_not_run_times_out() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let server = Memcached::start();
    let t = transport(vec![server.addr()], TIMEOUT, Protocol::Auto);
    let a = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    a.block_on(t.store(&Store::set(b"idle:k", b"v", 0, 0)))
        .expect("set, opening the connection on the first runtime");
    let b = runtime();
    let (took, got) = b.block_on(async {
        let begun = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(5), t.get(b"idle:k")).await;
        (begun.elapsed(), got)
    });
    assert!(
        matches!(got, Ok(Err(Error::Timeout { .. }))),
        "a get while the connection's runtime is idle: {got:?} after {took:?}"
    );
    assert!(
        took < TIMEOUT + Duration::from_millis(250),
        "failed after {took:?}"
    );
    drop(a);
    let got = b.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match t.get(b"idle:k").await {
                Ok(got) => break got,
                Err(e) => assert!(Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(got.map(|i| i.value), Some(b"v".to_vec()));
}

#[test]
fn a_dead_server_is_ejected_and_its_keys_move_as_the_blocking_transport_moves_them() {
    let mut servers = [Memcached::start(), Memcached::start()];
    let mut config = TextConfig {
        servers: servers.iter().map(Memcached::addr).collect(),
        read_timeout: Duration::from_millis(300),
        failover: Failover {
            failure_limit: 2,
            remove_failed: true,
            retry_timeout: Duration::from_secs(1),
            dead_timeout: Duration::from_secs(30),
        },
        ..TextConfig::default()
    };
    config.set_behavior("ketama", "true").expect("ketama");
    let t = TokioTextTransport::new(config.clone()).expect("transport");
    let blocking = newcache_transport_text::TextTransport::new(config).expect("blocking");
    let keys: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("eject:{i}").into_bytes())
        .collect();
    for k in &keys {
        assert_eq!(t.server_for_key(k).ok(), blocking.server_for_key(k).ok());
    }
    let on_1 = keys
        .iter()
        .find(|k| t.server_for_key(k).ok() == Some(1))
        .expect("a key on server 1")
        .clone();
    servers[1].kill();
    let rt = runtime();
    rt.block_on(async {
        let err = t.get(&on_1).await.expect_err("server 1 is dead");
        assert!(err.is_connection_error(), "the first attempt: {err}");
        // Left alone for retry_timeout (its key stays on it and fails fast), as libmemcached
        // counts failures under remove_failed; the next real attempt fails and ejects it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while t.server_for_key(&on_1).ok() == Some(1) {
            assert!(Instant::now() < deadline, "not ejected in 5 s");
            let err = t.get(&on_1).await.expect_err("server 1 is dead");
            assert!(err.is_server_failure(), "{err}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Ejected: the key now lives on server 0, and works.
        assert_eq!(t.server_for_key(&on_1).ok(), Some(0));
        let v = value_of(&on_1, 1, 0);
        t.store(&Store::set(&on_1, &v, 0, 0))
            .await
            .expect("set on server 0");
        let item = t.get(&on_1).await.expect("get").expect("a hit");
        assert_eq!(item.value, v);
    });
}

#[test]
fn unix_domain_sockets_work() {
    let server = Memcached::unix();
    let t = transport(vec![server.addr()], Duration::from_secs(1), Protocol::Auto);
    let rt = runtime();
    rt.block_on(async {
        t.store(&Store::set(b"sock", b"value", 3, 0))
            .await
            .expect("set");
        let item = t.get(b"sock").await.expect("get").expect("a hit");
        assert_eq!((item.value.as_slice(), item.flags), (&b"value"[..], 3));
        assert!(t.meta_get(b"sock", 10).await.expect("meta get").is_some());
    });
    assert_eq!(t.server_protocol(0), Some(Protocol::Meta));
}

/// Without the `tls` feature, a TLS config is refused when the transport is built (with it,
/// tests/tests/tls.rs runs the transport over TLS).
#[cfg(not(feature = "tls"))]
#[test]
fn without_the_tls_feature_tls_is_refused_with_a_typed_error() {
    let refused = TokioTextTransport::new(TextConfig {
        servers: vec!["127.0.0.1:1".into()],
        tls: Some(newcache_transport_text::TlsConfig::default()),
        ..TextConfig::default()
    });
    match refused {
        Err(Error::Unsupported { command, .. }) => assert!(command.contains("TLS"), "{command}"),
        other => panic!("TLS was not refused: {other:?}"),
    }
}

#[test]
fn building_connects_to_nothing() {
    // Nothing listens on port 1: building still succeeds, the first request fails.
    let t = transport(
        vec!["127.0.0.1:1".into()],
        Duration::from_millis(200),
        Protocol::Auto,
    );
    assert_eq!(t.io_stats().connections, 0);
    let rt = runtime();
    let err = rt.block_on(t.get(b"k")).expect_err("nothing listens");
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}

#[test]
fn through_twemproxy_the_probe_finds_classic_and_keyed_commands_work() {
    let backends = [Memcached::start(), Memcached::start()];
    let proxy = newcache_testkit::Twemproxy::start(&backends.iter().collect::<Vec<_>>());
    let t = transport(vec![proxy.addr()], Duration::from_secs(2), Protocol::Auto);
    let rt = runtime();
    rt.block_on(async {
        let keys: Vec<Vec<u8>> = (0..30).map(|i| format!("nut:{i}").into_bytes()).collect();
        let values: Vec<Vec<u8>> = keys.iter().map(|k| value_of(k, 1, 5)).collect();
        let stores: Vec<Store<'_>> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| Store::set(k, v, 0, 0))
            .collect();
        let statuses = t.store_many(&stores).await.expect("store_many");
        assert!(statuses.iter().all(|s| s.is_stored()));
        let asked: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let items = t.get_many(&asked).await.expect("get_many");
        for (item, v) in items.iter().zip(&values) {
            assert_eq!(item.as_ref().map(|i| &i.value), Some(v));
        }
        assert_eq!(t.incr(b"nut:none", 1).await.expect("incr"), None);
        assert!(matches!(
            t.meta_get(b"nut:0", 1).await,
            Err(Error::Unsupported { .. })
        ));
        // What twemproxy lacks is the blocking transport's error too: `Unsupported`, not
        // `Io` "closed with replies still due" (an outside audit).
        let stats = t.stats().await;
        assert!(
            matches!(&stats, Err(Error::Unsupported { command, .. }) if command == "stats"),
            "{stats:?}"
        );
        let flushed = t.flush_all().await;
        assert!(
            matches!(&flushed, Err(Error::Unsupported { command, .. }) if command == "flush_all"),
            "{flushed:?}"
        );
        // Nor is the proxy marked down by it.
        assert_eq!(t.get_many(&asked).await.expect("get_many").len(), 30);
    });
    assert_eq!(t.server_protocol(0), Some(Protocol::Classic));
}

#[test]
fn delete_many_quiet_deletes_every_key_on_every_server_in_both_dialects() {
    let servers = [Memcached::start(), Memcached::start(), Memcached::start()];
    let rt = runtime();
    for protocol in [Protocol::Auto, Protocol::Classic] {
        let t = transport(
            servers.iter().map(Memcached::addr).collect(),
            Duration::from_secs(2),
            protocol,
        );
        rt.block_on(async {
            let keys: Vec<Vec<u8>> = (0..100)
                .map(|i| format!("quiet:{protocol}:{i}").into_bytes())
                .collect();
            let stores: Vec<Store<'_>> = keys.iter().map(|k| Store::set(k, b"v", 0, 0)).collect();
            t.store_many(&stores).await.expect("store_many");
            // Sixty of them, and ten keys that hold nothing (NF / NOT_FOUND are read too).
            let mut gone: Vec<&[u8]> = keys[..60].iter().map(Vec::as_slice).collect();
            let missing: Vec<Vec<u8>> = (0..10)
                .map(|i| format!("quiet:{protocol}:missing:{i}").into_bytes())
                .collect();
            gone.extend(missing.iter().map(Vec::as_slice));
            t.delete_many_quiet(&gone).await.expect("delete_many_quiet");
            let asked: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let items = t.get_many(&asked).await.expect("get_many");
            for (i, item) in items.iter().enumerate() {
                assert_eq!(item.is_some(), i >= 60, "{protocol}: key {i}");
            }
            assert!(matches!(
                t.delete_many_quiet(&[b"ok", b"bad key"]).await,
                Err(Error::InvalidKey { .. })
            ));
        });
    }
}

#[test]
fn requests_spread_over_the_configured_connections_and_close_or_drop_closes_them() {
    let server = Memcached::start();
    let idle = server.stat("curr_connections");
    let t = TokioTextTransport::new(TextConfig {
        servers: vec![server.addr()],
        // A long read timeout: the connections' tasks wake every quarter of it, and a
        // dropped connection must close sooner than that.
        read_timeout: Duration::from_secs(8),
        async_connections: 3,
        ..TextConfig::default()
    })
    .expect("transport");
    let rt = runtime();
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..64)
            .map(|i| format!("spread:{i}").into_bytes())
            .collect(),
    );
    rt.block_on(async {
        for k in keys.iter() {
            t.store(&Store::set(k, k, 0, 0)).await.expect("set");
        }
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let (t, keys) = (t.clone(), keys.clone());
                tokio::spawn(async move { (i, t.get(&keys[i]).await) })
            })
            .collect();
        for h in handles {
            let (i, got) = h.await.expect("task");
            let item = got.expect("get").expect("a hit");
            assert_eq!(item.value, keys[i]);
        }
    });
    assert_eq!(t.io_stats().connections, 3);
    // (memcached counts the statistics' own connections too, and drops a closed one from
    // its count a moment later: hence no equality.)
    assert!(server.stat("curr_connections") >= idle + 2);
    // close(): the connections go; the next request opens one.
    t.close();
    let deadline = Instant::now() + Duration::from_millis(500);
    while server.stat("curr_connections") > idle {
        assert!(
            Instant::now() < deadline,
            "close() left the connections open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let item = rt.block_on(t.get(&keys[0])).expect("get").expect("a hit");
    assert_eq!(item.value, keys[0]);
    assert_eq!(t.io_stats().connections, 4);
    drop(t);
    // The connections close at once, not at their tasks' next tick (2 s here: they stayed
    // open that long).
    let deadline = Instant::now() + Duration::from_millis(500);
    while server.stat("curr_connections") > idle {
        assert!(Instant::now() < deadline, "the connections stayed open");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(rt);
}

/// What the classic protocol cannot detect, reported and not asserted: with every fault
/// (duplicates and replays among them), a duplicated reply of the same shape as the next
/// one awaited is taken for it. This is why `Protocol::Auto` speaks meta to memcached 1.6.
#[test]
fn classic_under_duplicates_shows_what_untagged_replies_cannot_tell() {
    let (tally, _, _) = fault_run(
        Protocol::Classic,
        every_fault(),
        16,
        "classic, every fault (reported)",
    );
    assert!(tally.ops > 1_000, "{tally:?}");
}

#[test]
fn a_full_queue_makes_callers_wait_and_a_hung_server_bounds_that_wait() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let mut server = Memcached::start();
    // A queue of 2 requests per connection, one connection.
    let t = TokioTextTransport::new(TextConfig {
        servers: vec![server.addr()],
        read_timeout: TIMEOUT,
        write_timeout: TIMEOUT,
        async_queue: 2,
        ..TextConfig::default()
    })
    .expect("transport");
    let rt = runtime();
    let keys: Arc<Vec<Vec<u8>>> =
        Arc::new((0..64).map(|i| format!("queue:{i}").into_bytes()).collect());
    // 64 tasks through a queue of 2: they wait their turn, and every one is answered right.
    let wrong = rt.block_on(async {
        for (i, k) in keys.iter().enumerate() {
            let v = value_of(k, i as u64, 0);
            t.store(&Store::set(k, &v, 0, 0)).await.expect("set");
        }
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let (t, keys) = (t.clone(), keys.clone());
                tokio::spawn(async move {
                    let item = t.get(&keys[i]).await.expect("get").expect("hit");
                    parse_value(&item.value) != Some((keys[i].clone(), i as u64))
                })
            })
            .collect();
        let mut wrong = 0;
        for h in handles {
            wrong += usize::from(h.await.expect("task"));
        }
        wrong
    });
    assert_eq!(wrong, 0);
    // A hung server: the queue fills, and the callers behind it fail within their timeout
    // instead of waiting for room for ever.
    server.pause();
    let outcomes: Vec<(Duration, bool)> = rt.block_on(async {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (t, keys) = (t.clone(), keys.clone());
                tokio::spawn(async move {
                    let begun = Instant::now();
                    let got = t.get(&keys[i]).await;
                    (begun.elapsed(), matches!(got, Err(Error::Timeout { .. })))
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("task"));
        }
        out
    });
    server.resume();
    for (took, timed_out) in &outcomes {
        assert!(timed_out, "a caller behind the full queue of a hung server");
        assert!(
            *took < TIMEOUT + Duration::from_millis(300),
            "waited {took:?} with a {TIMEOUT:?} timeout"
        );
    }
}

/// A whole classic reply line nobody asked for (`END`, `STORED`, a number, an empty
/// `VALUE` block: [`Faults::stray_line`]) just before the real replies: the classic
/// protocol has no tags, so a get takes a stray `END` as its miss, and only what follows
/// (its real reply, where the next request's is due, or bytes nobody asked for) shows it.
/// Answers are handed over once what follows them checks out, so no key that holds a
/// value reads as a miss when the stray line and the real reply are read together (248 did
/// in 3 s when each reply was handed over as read). A stray line read on its own, before
/// the real reply has come, still reads as a miss: classic cannot tell it (docs/design.md).
#[test]
fn classic_stray_reply_lines_give_no_false_miss() {
    let (reads, counts) = read_known_values_under(
        Faults::none().stray_line(50_000).seed(5),
        Protocol::Classic,
        16,
        |task, k| format!("stray:{task}:{k}").into_bytes(),
        |task, k| value_of(format!("stray:{task}:{k}").as_bytes(), 1, 50),
    );
    assert!(counts.stray_lines > 100, "{counts:?}");
    reads.none_wrong();
}

#[test]
fn a_hang_under_64_tasks_is_one_failure_not_one_per_task() {
    // 64 tasks pipelined on one connection to a server hung past the read timeout: one
    // failure, as for the blocking transport's 64 threads (tests/tests/cluster_failover.rs).
    // Counted one per job, the hang made a healthy server fail fast for retry_timeout, or
    // with remove_failed ejected it for good.
    for remove_failed in [false, true] {
        let mut servers = [Memcached::start(), Memcached::start(), Memcached::start()];
        let mut config = TextConfig {
            servers: servers.iter().map(Memcached::addr).collect(),
            read_timeout: Duration::from_millis(300),
            ..TextConfig::default()
        };
        if remove_failed {
            for (name, value) in [
                ("ketama", "true"),
                ("remove_failed", "1"),
                ("retry_timeout", "1"),
            ] {
                config.set_behavior(name, value).expect(name);
            }
        }
        let t = TokioTextTransport::new(config).expect("transport");
        let on_1: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("hang:{i}").into_bytes())
            .filter(|k| t.server_for_key(k).unwrap() == 1)
            .collect();
        let rt = runtime();
        rt.block_on(async {
            t.store(&Store::set(&on_1[0], b"v", 0, 0))
                .await
                .expect("set");
        });
        servers[1].pause();
        let outcomes = concurrent_gets(&rt, &t, vec![on_1[0].clone(); 64]);
        servers[1].resume();
        assert!(
            outcomes
                .iter()
                .all(|(_, got)| matches!(got, Err(Error::Timeout { .. }))),
            "remove_failed={remove_failed}: {outcomes:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        rt.block_on(async {
            for k in on_1.iter().take(20) {
                loop {
                    match t.store(&Store::set(k, b"v", 0, 0)).await {
                        Ok(_) => break,
                        Err(Error::ServerDown { retry_in, .. })
                            if remove_failed
                                && retry_in <= Duration::from_secs(2)
                                && Instant::now() < deadline =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => panic!(
                            "remove_failed={remove_failed}: the server is out after one hang: {e}"
                        ),
                    }
                }
                assert_eq!(t.server_for_key(k).unwrap(), 1);
            }
        });
    }
}

#[test]
fn timeouts_past_a_day_are_taken_as_a_day_not_a_panic() {
    // Duration::MAX overflowed the deadlines made from it (`Instant + timeout`).
    let server = Memcached::start();
    let config = TextConfig {
        servers: vec![server.addr()],
        connect_timeout: Duration::MAX,
        read_timeout: Duration::MAX,
        write_timeout: Duration::MAX,
        idle_timeout: Duration::MAX,
        ..TextConfig::default()
    };
    let blocking = newcache_transport_text::TextTransport::new(config.clone()).unwrap();
    newcache_transport::Transport::store(&blocking, &Store::set(b"k", b"v", 0, 0)).unwrap();
    let t = TokioTextTransport::new(config).unwrap();
    let rt = runtime();
    let outcomes = concurrent_gets(&rt, &t, vec![b"k".to_vec(); 32]);
    assert!(outcomes.iter().all(|(_, got)| got.is_ok()), "{outcomes:?}");
}

/// A task that calls a server left alone (failing fast with `ServerDown`) in a loop gives
/// the runtime its turn, as a task doing I/O does: the calls return without touching a
/// socket, and used to never yield, so on a current-thread runtime every other task
/// stalled for the whole retry window (an outside audit: 2 s stalls).
#[test]
fn a_task_calling_a_server_left_alone_in_a_loop_lets_the_others_run() {
    let mut server = Memcached::start();
    let addr = server.addr();
    server.kill();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = TokioTextTransport::new(TextConfig {
        servers: vec![addr, Memcached::start().addr()],
        failover: Failover {
            failure_limit: 1,
            retry_timeout: Duration::from_secs(30),
            ..Failover::default()
        },
        ..TextConfig::default()
    })
    .unwrap();
    let on_dead: Vec<u8> = (0..1000)
        .map(|i| format!("k{i}").into_bytes())
        .find(|k| t.server_for_key(k).unwrap() == 0)
        .unwrap();
    let (calls, ticks) = rt.block_on(async {
        // The first call finds the server down; the next ones fail fast.
        assert!(t.get(&on_dead).await.is_err());
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        tokio::task::yield_now().await;
        let looping = {
            let t = t.clone();
            tokio::spawn(async move {
                let until = Instant::now() + Duration::from_millis(300);
                let mut calls = 0u64;
                while Instant::now() < until {
                    let e = t.get(&on_dead).await.unwrap_err();
                    assert!(matches!(e, Error::ServerDown { .. }), "{e}");
                    calls += 1;
                }
                calls
            })
        };
        let calls = looping.await.unwrap();
        // Read before the ticker runs again: the ticks that came during the loop.
        let during = ticks.load(Ordering::Relaxed);
        ticker.abort();
        (calls, during)
    });
    assert!(calls > 1000, "the loop ran: {calls} calls");
    assert!(
        ticks >= 30,
        "{ticks} ticks of a 1 ms timer in 300 ms while another task called a down server {calls} times"
    );
}

/// A reply that keeps arriving one byte at a time, not whole within two read timeouts,
/// fails its connection, and the next requests go on a new one. Every byte used to count
/// as progress: a 200-byte reply at one byte per 50 ms kept the connection for 10 s, every
/// get on it timing out (an outside audit: the first success after 13.66 s).
#[test]
fn a_reply_trickling_in_past_the_read_timeout_does_not_hold_the_connection() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let server = Memcached::start();
    let proxy = FaultProxy::start(server.socket_addr(), Faults::none());
    let t = transport(vec![proxy.addr()], TIMEOUT, Protocol::Meta);
    let rt = runtime();
    rt.block_on(async {
        t.store(&Store::set(b"big", &[b'x'; 200], 0, 0))
            .await
            .expect("set big");
        t.store(&Store::set(b"small", b"s", 0, 0))
            .await
            .expect("set small");
        proxy.set_faults(Faults::none().trickle_slowly(1_000_000, Duration::from_millis(50)));
        let started = Instant::now();
        let big = t.get(b"big").await;
        assert!(matches!(big, Err(Error::Timeout { .. })), "{big:?}");
        assert!(started.elapsed() < TIMEOUT * 2, "{:?}", started.elapsed());
        proxy.set_faults(Faults::none());
        // Within three read timeouts (the trickling connection's end at two, a new one),
        // not ten seconds.
        let began = Instant::now();
        loop {
            match t.get(b"small").await {
                Ok(item) => {
                    assert_eq!(item.map(|i| i.value).as_deref(), Some(&b"s"[..]));
                    break;
                }
                Err(e) => assert!(
                    began.elapsed() < TIMEOUT * 3,
                    "still failing after {:?}: {e}",
                    began.elapsed()
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Connections and queue past what the async transport can hold are taken as its most
/// (`MAX_ASYNC_CONNECTIONS`, `MAX_ASYNC_QUEUE`), and the newcache URL refuses them: a
/// classic pool of `max_connections=4294967295` aborted the process allocating its slots,
/// and `async_queue` past tokio's 2^61 - 1 permits panicked at the first request (an
/// outside audit).
#[test]
fn connections_and_queue_past_the_most_are_held_to_it() {
    let server = Memcached::start();
    let rt = runtime();
    for protocol in [Protocol::Classic, Protocol::Meta, Protocol::Auto] {
        let t = TokioTextTransport::new(TextConfig {
            servers: vec![server.addr()],
            protocol,
            max_connections: usize::MAX,
            async_connections: usize::MAX,
            async_queue: usize::MAX,
            ..TextConfig::default()
        })
        .expect("transport");
        rt.block_on(async {
            t.store(&Store::set(b"k", b"v", 0, 0)).await.unwrap();
            assert_eq!(t.get(b"k").await.unwrap().unwrap().value, b"v");
        });
    }
    for (url, named) in [
        ("async_queue=1048577", "async_queue"),
        ("async_connections=1025", "async_connections"),
        ("async_queue=18446744073709551615", "async_queue"),
    ] {
        let e = newcache::AsyncCache::from_url(&format!("newcache://{}/?{url}", server.addr()))
            .unwrap_err();
        assert!(e.to_string().contains(named), "{url}: {e}");
    }
    newcache::AsyncCache::from_url(&format!(
        "newcache://{}/?async_queue=1048576&async_connections=1024",
        server.addr()
    ))
    .expect("the most is taken");
}

/// A multi-get whose reply takes several read timeouts to arrive, each part of it in time
/// (a slow link: 8 MB/s), is answered whole on both transports: its keys go out in rounds
/// of 32 KB of requests, and each round's reply has the read timeout from when the round
/// before it was answered, as the blocking transport had it. The async transport gave the
/// whole reply one read timeout, and a `get_many` of 100,000 values of 1 KB failed at a
/// 500 ms timeout where the blocking transport answered it (an outside audit).
#[test]
fn a_multi_get_longer_than_the_read_timeout_is_answered_when_each_round_is_in_time() {
    const TIMEOUT: Duration = Duration::from_millis(400);
    const KEYS: usize = 16_000;
    let server = Memcached::start();
    let setup = transport(vec![server.addr()], TIMEOUT, Protocol::Meta);
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("slow-link:{i:030}").into_bytes())
        .collect();
    let rt = runtime();
    rt.block_on(async {
        for chunk in keys.chunks(500) {
            let stores: Vec<Store<'_>> = chunk
                .iter()
                .map(|k| Store::set(k, &[b'v'; 1000], 0, 0))
                .collect();
            setup.store_many(&stores).await.expect("set_many");
        }
    });
    let proxy = FaultProxy::start(server.socket_addr(), Faults::none().pace(8_000_000));
    let asked: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    for protocol in [Protocol::Meta, Protocol::Classic] {
        let t = transport(vec![proxy.addr()], TIMEOUT, protocol);
        let started = Instant::now();
        let read = rt.block_on(t.get_many(&asked));
        let took = started.elapsed();
        let items = read.unwrap_or_else(|e| panic!("{protocol:?}: after {took:?}: {e}"));
        assert!(
            took > TIMEOUT * 2,
            "{protocol:?}: not slow enough to test: {took:?}"
        );
        let hits = items
            .iter()
            .filter(|i| i.as_ref().is_some_and(|i| i.value.len() == 1000))
            .count();
        assert_eq!(hits, KEYS, "{protocol:?}");
        if protocol == Protocol::Meta {
            // The herd's meta reads: one `mg` per key, in rounds as well.
            let read = rt.block_on(t.meta_get_many(&asked, 30));
            let items = read.unwrap_or_else(|e| panic!("meta gets: {e}"));
            assert_eq!(items.iter().filter(|i| i.is_some()).count(), KEYS);
        }
    }
    let blocking = newcache_transport_text::TextTransport::new(TextConfig {
        servers: vec![proxy.addr()],
        read_timeout: TIMEOUT,
        write_timeout: TIMEOUT,
        ..TextConfig::default()
    })
    .expect("blocking transport");
    let items = newcache_transport::Transport::get_many(&blocking, &asked).expect("blocking");
    assert_eq!(items.iter().filter(|i| i.is_some()).count(), KEYS);
}

/// A batch in rounds over two servers, one of them hung (SIGSTOP): the live server's keys
/// are all stored and read, the hung one's are reported failed with a timeout, and the call
/// ends within about one read timeout, not one per round.
#[test]
fn a_hung_server_fails_its_rounds_within_the_read_timeout_and_the_other_answers() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    const KEYS: usize = 6_000;
    let live = Memcached::start();
    let mut hung = Memcached::start();
    let t = transport(vec![live.addr(), hung.addr()], TIMEOUT, Protocol::Meta);
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("rounds-hung:{i:030}").into_bytes())
        .collect();
    let asked: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let values: Vec<Vec<u8>> = keys.iter().map(|k| value_of(k, 7, 100)).collect();
    let stores: Vec<Store<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| Store::set(k, v, 0, 0))
        .collect();
    let rt = runtime();
    rt.block_on(async {
        // Both servers up: every key stored, in rounds of 512 per server.
        let stored = t.store_many_each(&stores).await.expect("set_many");
        assert!(stored.failed.is_empty(), "{:?}", stored.failed.first());
        hung.pause();
        for _ in 0..2 {
            let started = Instant::now();
            let read = t
                .get_many_read(&asked)
                .await
                .expect("the live server answers");
            let took = started.elapsed();
            let hits = read
                .items
                .iter()
                .zip(&keys)
                .filter(|(i, k)| {
                    i.as_ref()
                        .is_some_and(|i| parse_value(&i.value) == Some(((*k).clone(), 7)))
                })
                .count();
            assert_eq!(hits + read.unread.len(), KEYS, "every key read or unread");
            assert!(hits > KEYS / 4 && !read.unread.is_empty(), "{hits}");
            assert!(
                read.unread.iter().all(|(_, e)| e.is_server_failure()),
                "{:?}",
                read.unread.first()
            );
            assert!(took < TIMEOUT * 2, "took {took:?}");
        }
        let started = Instant::now();
        let stored = t
            .store_many_each(&stores)
            .await
            .expect("the live server stores");
        assert!(!stored.failed.is_empty());
        assert_eq!(
            stored
                .statuses
                .iter()
                .filter(|s| **s == StoreStatus::Stored)
                .count()
                + stored.failed.len(),
            KEYS
        );
        assert!(
            started.elapsed() < TIMEOUT * 2,
            "took {:?}",
            started.elapsed()
        );
    });
    hung.resume();
}

/// A value cut short by exactly the length of the reply after it takes that reply into its
/// data block and ends where the read ends (a middlebox that lost bytes): the transport
/// holds a job whose reply ended a read while other replies are owed until the next reply
/// begins as its request's does, so the cut value is never handed over. It was, whenever
/// the read ended right after it (an outside audit: 5 of 14 cuts reached a caller).
#[test]
fn a_value_that_took_in_the_next_reply_is_never_handed_over() {
    let server = Memcached::start();
    let proxy = FaultProxy::start(server.socket_addr(), Faults::none());
    let t = transport(
        vec![proxy.addr()],
        Duration::from_millis(100),
        Protocol::Meta,
    );
    let rt = runtime();
    let value = vec![b'x'; 200];
    let (mut right, mut failed) = (0, 0);
    rt.block_on(async {
        t.store(&Store::set(b"a", &value, 0, 0))
            .await
            .expect("set a");
        proxy.set_faults(Faults::none().splice_next(1_000_000));
        t.store(&Store::set(b"b", b"bbbb", 0, 0))
            .await
            .expect("set b");
        proxy.set_faults(Faults::none().splice_next(1_000_000));
        for i in 0..80 {
            let key = format!("b{i}").into_bytes();
            let store = Store::set(&key, b"v", 0, 0);
            // The reply taken in: a one-line `HD`, or (every other round) another value.
            let (got, _) = if i % 2 == 0 {
                tokio::join!(t.get(b"a"), async { t.store(&store).await.map(drop) })
            } else {
                tokio::join!(t.get(b"a"), async { t.get(b"b").await.map(drop) })
            };
            match got {
                Ok(Some(item)) => {
                    assert_eq!(item.value, value, "a value with another reply in it");
                    right += 1;
                }
                Ok(None) => panic!("a miss on a key that is there"),
                Err(_) => failed += 1,
            }
        }
    });
    let spliced = proxy.counts().spliced;
    println!("{spliced} values spliced; {right} reads right, {failed} failed");
    assert!(spliced > 0, "no splice made: the test tests nothing");
    assert!(failed > 0 && right > 0);
}

/// A `set_many` of a server too large for one round, the same key in two rounds: the
/// later request wins, as in one batch, whatever the connections (classic, where a
/// connection carries one request at a time, and meta over four). The rounds were queued
/// together and took different connections, which memcached runs on different threads,
/// and the earlier value won 6 to 76 times in 300 (a review).
#[test]
fn a_key_in_two_rounds_of_a_set_many_keeps_the_later_value() {
    let server = Memcached::start();
    let rt = runtime();
    let keys: Vec<Vec<u8>> = (0..1_024)
        .map(|i| format!("rounds-order:{i}").into_bytes())
        .collect();
    for (protocol, connections) in [(Protocol::Classic, 1), (Protocol::Meta, 4)] {
        let t = TokioTextTransport::new(TextConfig {
            servers: vec![server.addr()],
            protocol,
            async_connections: connections,
            ..TextConfig::default()
        })
        .expect("transport");
        let mut earlier_won = 0;
        for run in 0..60 {
            let first = format!("first {run}");
            let second = format!("second {run}");
            let stores: Vec<Store<'_>> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| match i {
                    511 => Store::set(b"rounds-order:race", first.as_bytes(), 0, 0),
                    512 => Store::set(b"rounds-order:race", second.as_bytes(), 0, 0),
                    _ => Store::set(k, &[b'v'; 100], 0, 0),
                })
                .collect();
            let got = rt.block_on(async {
                t.store_many(&stores).await.expect("set_many");
                t.get(b"rounds-order:race").await.expect("get")
            });
            let got = got.map(|i| i.value).unwrap_or_default();
            if got != second.as_bytes() {
                earlier_won += 1;
            }
        }
        assert_eq!(
            earlier_won, 0,
            "{protocol:?} over {connections}: the earlier value won"
        );
    }
}

/// `key`'s get, and 1 ms after it `late` beside it on the same connection: the value read,
/// how long the get took, and what `late` came to.
async fn get_beside<F: std::future::Future>(
    t: &TokioTextTransport,
    key: &[u8],
    late: F,
) -> (Option<Vec<u8>>, Duration, F::Output) {
    let started = Instant::now();
    let get = async {
        let got = t.get(key).await;
        (got, started.elapsed())
    };
    let late = async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        late.await
    };
    let ((got, took), late) = tokio::join!(get, late);
    let got = got.unwrap_or_else(|e| panic!("after {took:?}: {e}"));
    (got.map(|i| i.value), took, late)
}

/// A reply that came whole is handed over at once even when the reply after it on the
/// connection is late: only a value that may hold the next reply waits for the next reply
/// to begin. Holding every such reply made a get wait for the next request's reply, and
/// time out behind a slow one (a review: 5 of 5 gets timed out at 1 s behind a request
/// held 1.5 s; answered in 31 ms before), and so did a reply whose next one has no token,
/// a multi-get of more than 20 keys (a review).
#[test]
fn a_whole_reply_is_not_held_behind_a_late_one() {
    const TIMEOUT: Duration = Duration::from_millis(1_000);
    let server = Memcached::start();
    let rt = runtime();
    let plain = vec![b'v'; 900 * 1024];
    // Text with line ends, and `ERROR` in it (held too for a while: a review).
    let csv = b"id,state\r\n7,ERROR\r\n".repeat(900 * 1024 / 20);
    let keys: Vec<Vec<u8>> = (0..25)
        .map(|i| format!("slowmany-{i}").into_bytes())
        .collect();
    let asked: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    for (many, big) in [(false, &plain), (true, &plain), (false, &csv)] {
        // Each on a connection of its own: `midkey`'s reply streams in over about 200 ms,
        // and the late request, sent 1 ms after `midkey`'s, is held back for good (nothing
        // asks `never-asked`).
        let proxy = FaultProxy::start(server.socket_addr(), Faults::none());
        let t = transport(vec![proxy.addr()], TIMEOUT, Protocol::Meta);
        rt.block_on(async {
            t.store(&Store::set(b"midkey", big, 0, 0))
                .await
                .expect("set");
            proxy.set_faults(Faults::none().pace(4_000_000));
            let (got, took, late_failed) = if many {
                proxy.hold_request(b"slowmany", b"never-asked");
                get_beside(&t, b"midkey", async { t.get_many(&asked).await.is_err() }).await
            } else {
                proxy.hold_request(b"slowkey", b"never-asked");
                get_beside(&t, b"midkey", async { t.get(b"slowkey").await.is_err() }).await
            };
            assert!(
                got == Some(big.clone()),
                "midkey's value (behind a multi-get: {many})"
            );
            assert!(
                took < TIMEOUT * 3 / 4,
                "midkey took {took:?} (behind a multi-get: {many})"
            );
            assert!(late_failed, "the late request was held back");
        });
    }
}
