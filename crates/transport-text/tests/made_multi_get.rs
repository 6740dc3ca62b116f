//! A multi-get whose keys are made during the call (`Transport::get_many_made`) on one
//! memcached: every key is made first, then it goes out whole, one `gets` closed by the
//! tagged `mg` of its last key (a request of more than one round's bytes: one such `gets` a
//! round), and what it hands over is memcached's answer: bytes in front of it fail the call
//! before anything is handed over. A relay between the transport and a real memcached
//! records the requests and can put bytes in front of the next reply.

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
    setup_keys((0..100).map(|i| format!("made:{i}").into_bytes()).collect())
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
fn a_made_multi_get_goes_out_whole_closed_by_the_tag_of_its_last_key() {
    let (_server, tap, t, keys) = setup();
    tap.lock().unwrap().requests.clear();
    // Keys the transport asks to be made (what the cache's hashing key function does).
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
    let names = keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(
        requests[0],
        format!("gets {names}"),
        "one gets of every key"
    );
    assert!(
        requests[1].starts_with("mg made:99 k O"),
        "closed by the tagged mg of its last key: {}",
        requests[1]
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
        requests[0].starts_with("gets made:0 made:1 "),
        "{}",
        requests[0]
    );
    assert!(requests[0].ends_with(" made:99"), "{}", requests[0]);
    assert!(
        requests[1].starts_with("mg made:99 k O"),
        "closed by the tagged mg of its last key: {}",
        requests[1]
    );
}

#[test]
fn bytes_before_the_reply_fail_the_call_before_anything_is_handed_over() {
    let (_server, tap, t, keys) = setup();
    // An older answer for some of the keys (what a duplicated reply would be), in front of
    // memcached's reply.
    let stale = b"VALUE made:0 0 5 1\r\nstale\r\nVALUE made:1 0 5 2\r\nstale\r\nEND\r\n";
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
fn a_multi_get_of_many_rounds_closes_every_round_with_its_tag_and_reads_every_value() {
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

    // Every `gets` is closed by the tagged `mg` of its last key, and nothing else is sent;
    // the keys go out once each, in order.
    let requests = lines(&tap.lock().unwrap().requests);
    let mut sent: Vec<String> = Vec::new();
    let mut rounds = 0;
    for (n, line) in requests.iter().enumerate() {
        let Some(names) = line.strip_prefix("gets ") else {
            assert!(line.starts_with("mg "), "only gets and mg lines: {line}");
            assert!(
                n > 0 && requests[n - 1].starts_with("gets "),
                "a tag follows its gets: {line}"
            );
            continue;
        };
        rounds += 1;
        let names: Vec<&str> = names.split(' ').collect();
        let last = names[names.len() - 1];
        assert!(
            requests
                .get(n + 1)
                .is_some_and(|l| l.starts_with(&format!("mg {last} k O"))),
            "closed by its last key's tag: {line:.60}"
        );
        sent.extend(names.iter().map(|k| k.to_string()));
    }
    assert!(rounds >= 4, "several rounds: {rounds}");
    let want: Vec<String> = keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(sent, want);
}
