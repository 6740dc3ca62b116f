//! A large multi-get whose keys are made during the call (`Transport::get_many_made`) on one
//! memcached: it goes out in two parts, the first opened by a tagged `mg` and the second
//! closed by one, and what it hands over is memcached's answer: nothing before the opening
//! tag is taken for it. One whose keys were all made before the call goes out whole.
//! A relay between the transport and a real memcached records the requests and can put
//! bytes in front of the next reply.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use newcache_testkit::Memcached;
use newcache_transport::{Error, MadeKeys, Premade, Result, Store, Transport};
use newcache_transport_text::{Protocol, TextConfig, TextTransport};

/// What the relay saw and what it is to add.
#[derive(Default)]
struct Tap {
    /// Every byte the client sent, in order.
    requests: Vec<u8>,
    /// Bytes written to the client before the next reply, once.
    inject: Option<Vec<u8>>,
}

/// A relay in front of `upstream`: records the requests, forwards the replies.
fn relay(upstream: SocketAddr) -> (String, Arc<Mutex<Tap>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tap = Arc::new(Mutex::new(Tap::default()));
    let shared = tap.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let server = TcpStream::connect(upstream).unwrap();
            let (mut c_in, mut c_out) = (client.try_clone().unwrap(), client);
            let (mut s_in, mut s_out) = (server.try_clone().unwrap(), server);
            let (up, down) = (shared.clone(), shared.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 * 1024];
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    up.lock().unwrap().requests.extend_from_slice(&buf[..n]);
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 * 1024];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let inject = down.lock().unwrap().inject.take();
                    if let Some(bytes) = inject {
                        if c_out.write_all(&bytes).is_err() {
                            break;
                        }
                    }
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(Shutdown::Both);
            });
        }
    });
    (addr, tap)
}

/// memcached behind a relay, a meta transport over the relay, and 100 keys holding values
/// (`v:<key>`) written through it.
fn setup() -> (Memcached, Arc<Mutex<Tap>>, TextTransport, Vec<Vec<u8>>) {
    setup_keys((0..100).map(|i| format!("half:{i}").into_bytes()).collect())
}

/// [`setup`] with these keys.
fn setup_keys(keys: Vec<Vec<u8>>) -> (Memcached, Arc<Mutex<Tap>>, TextTransport, Vec<Vec<u8>>) {
    let server = Memcached::start();
    let (addr, tap) = relay(server.socket_addr());
    let t = TextTransport::new(TextConfig {
        servers: vec![addr],
        read_timeout: Duration::from_millis(500),
        protocol: Protocol::Meta,
        ..TextConfig::default()
    })
    .unwrap();
    let values: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| [b"v:".as_slice(), k].concat())
        .collect();
    let stores: Vec<Store<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| Store::set(k, v, 0, 0))
        .collect();
    t.store_many(&stores).unwrap();
    (server, tap, t, keys)
}

/// `get_many_made` of `keys`: the call's outcome and what it handed over, by index.
fn made_get(t: &TextTransport, keys: &[Vec<u8>]) -> (Result<()>, Vec<(usize, Vec<u8>)>) {
    let mut got = Vec::new();
    let mut made = Premade::new(keys);
    let outcome = t.get_many_made(&mut made, &mut |i, key, item| {
        assert_eq!(key, keys[i].as_slice(), "handed over with its own key");
        got.push((i, item.value));
    });
    (outcome, got)
}

/// The lines of `bytes`, as text.
fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_large_made_multi_get_goes_out_in_two_parts_the_first_opened_by_its_tag() {
    let (_server, tap, t, keys) = setup();
    tap.lock().unwrap().requests.clear();
    let (outcome, mut got) = made_get(&t, &keys);
    outcome.unwrap();
    got.sort();
    let want: Vec<(usize, Vec<u8>)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (i, [b"v:".as_slice(), k].concat()))
        .collect();
    assert_eq!(got, want, "every value, each for its own key");

    let requests = lines(&tap.lock().unwrap().requests);
    let names = |range: std::ops::Range<usize>| {
        range
            .map(|i| String::from_utf8_lossy(&keys[i]).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(requests.len(), 4, "{requests:#?}");
    assert!(
        requests[0].starts_with("mg half:0 k O"),
        "the first part opens with the tagged mg of its first key: {}",
        requests[0]
    );
    assert_eq!(requests[1], format!("gets {}", names(0..50)));
    assert_eq!(requests[2], format!("gets {}", names(50..100)));
    assert!(
        requests[3].starts_with("mg half:99 k O"),
        "the second part closes with the tagged mg of its last key: {}",
        requests[3]
    );
    // The connection is in step after it: the next call reads its own answers.
    let (outcome, got) = made_get(&t, &keys[..3]);
    outcome.unwrap();
    assert_eq!(got.len(), 3);
}

#[test]
fn a_multi_get_whose_keys_are_all_made_before_the_call_goes_out_whole() {
    let (_server, tap, t, keys) = setup();
    tap.lock().unwrap().requests.clear();
    // Every key made before the transport asks (what the cache does when its key function's
    // keys can be refused one by one): nothing is left to make while memcached answers.
    let mut made = Premade::new(&keys);
    for i in 0..keys.len() {
        made.make(i).unwrap();
    }
    let mut got = Vec::new();
    t.get_many_made(&mut made, &mut |i, _, item| got.push((i, item.value)))
        .unwrap();
    assert_eq!(got.len(), 100, "every value");
    assert!(got
        .iter()
        .all(|(i, v)| *v == [b"v:".as_slice(), &keys[*i]].concat()));
    let requests = lines(&tap.lock().unwrap().requests);
    assert_eq!(
        requests.len(),
        2,
        "one gets and its closing tag: {requests:#?}"
    );
    assert!(
        requests[0].starts_with("gets half:0 half:1 "),
        "{}",
        requests[0]
    );
    assert!(requests[0].ends_with(" half:99"), "{}", requests[0]);
    assert!(
        requests[1].starts_with("mg half:99 k O"),
        "closed by the tagged mg of its last key: {}",
        requests[1]
    );
}

#[test]
fn bytes_before_the_first_parts_reply_fail_the_call_before_anything_is_handed_over() {
    let (_server, tap, t, keys) = setup();
    // An older answer for the first part's keys (what a duplicated reply would be), in front
    // of memcached's reply to the opening tag.
    let stale = b"VALUE half:0 0 5 1\r\nstale\r\nVALUE half:1 0 5 2\r\nstale\r\nEND\r\n";
    tap.lock().unwrap().inject = Some(stale.to_vec());
    let (outcome, got) = made_get(&t, &keys);
    assert!(
        matches!(outcome, Err(Error::Protocol { .. })),
        "a reply out of step is a protocol error: {outcome:?}"
    );
    assert!(got.is_empty(), "nothing was handed over: {got:?}");
    // The connection that saw it was closed: the next call gets memcached's own values.
    let (outcome, got) = made_get(&t, &keys);
    outcome.unwrap();
    assert_eq!(got.len(), 100);
    assert!(got
        .iter()
        .all(|(i, v)| *v == [b"v:".as_slice(), &keys[*i]].concat()));
}

#[test]
fn a_multi_get_of_many_rounds_tags_every_part_and_reads_every_value() {
    // 1,000 keys of 120 bytes: about 125 KB of request, sent in rounds of at most 32 KB.
    let keys: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("{:x<120}", format!("round:{i}:")).into_bytes())
        .collect();
    let (_server, tap, t, keys) = setup_keys(keys);
    tap.lock().unwrap().requests.clear();
    let (outcome, mut got) = made_get(&t, &keys);
    outcome.unwrap();
    got.sort();
    assert_eq!(got.len(), keys.len());
    assert!(got
        .iter()
        .all(|(i, v)| *v == [b"v:".as_slice(), &keys[*i]].concat()));

    // Every `gets` is opened by the tagged `mg` of its first key or closed by that of its
    // last; the last one is closed; the keys go out once each, in order.
    let requests = lines(&tap.lock().unwrap().requests);
    let mut sent: Vec<String> = Vec::new();
    let (mut opened, mut closed, mut parts) = (0, 0, 0);
    for (n, line) in requests.iter().enumerate() {
        let Some(names) = line.strip_prefix("gets ") else {
            assert!(line.starts_with("mg "), "only gets and mg lines: {line}");
            continue;
        };
        parts += 1;
        let names: Vec<&str> = names.split(' ').collect();
        let tag = |at: Option<&String>, key: &str| {
            at.is_some_and(|l| l.starts_with(&format!("mg {key} k O")))
        };
        let opens = n > 0 && tag(requests.get(n - 1), names[0]);
        let closes = tag(requests.get(n + 1), names[names.len() - 1]);
        assert!(opens != closes, "one tag per part: {line:.60}");
        opened += usize::from(opens);
        closed += usize::from(closes);
        sent.extend(names.iter().map(|k| k.to_string()));
    }
    assert!(
        requests.last().is_some_and(|l| l.starts_with("mg ")),
        "the call's replies end with a tag"
    );
    // A round's first part is half the keys left, cut where the round is full: a part that
    // fills its round goes alone (closed); the last round goes in two (opened, closed).
    assert!(parts >= 5, "several rounds: {parts} parts");
    assert!(
        opened >= 1 && closed >= 4,
        "{opened} opened, {closed} closed"
    );
    let want: Vec<String> = keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(sent, want);
}
