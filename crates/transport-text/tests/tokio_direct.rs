//! The async transport's direct path (a lone caller on an idle connection writes its request
//! and reads its reply in its own task) against a scripted server (a tokio listener that
//! answers what the test says, byte for byte): a lone caller dropped mid-reply, one that
//! times out on a server that never answers, one joined by 63 others mid-flight, lone calls
//! dropped at random points, a request the socket does not take whole, and the idle close
//! after lone calls.
#![cfg(feature = "tokio")]

use std::sync::Arc;
use std::time::Duration;

use newcache_transport::{AsyncTransport, Error};
use newcache_transport_text::{Protocol, TextConfig, TokioTextTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn meta(addr: String, read_timeout: Duration) -> TokioTextTransport {
    TokioTextTransport::new(TextConfig {
        servers: vec![addr],
        protocol: Protocol::Meta,
        read_timeout,
        ..TextConfig::default()
    })
    .unwrap()
}

/// Reads meta get lines until `n` have arrived (more may come in the same reads): each
/// one's key and opaque token, in order.
async fn read_gets(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Vec<(String, u32)> {
    let mut chunk = [0u8; 4096];
    loop {
        let complete = buf.iter().filter(|&&b| b == b'\n').count();
        if complete >= n {
            let end = buf.iter().rposition(|&b| b == b'\n').unwrap() + 1;
            let lines: Vec<(String, u32)> = buf[..end]
                .split(|&b| b == b'\n')
                .filter(|l| l.starts_with(b"mg "))
                .map(|l| {
                    let text = String::from_utf8_lossy(l).trim().to_string();
                    let fields: Vec<&str> = text.split(' ').collect();
                    let opaque = fields
                        .iter()
                        .find_map(|f| f.strip_prefix('O'))
                        .unwrap()
                        .parse()
                        .unwrap();
                    (fields[1].to_string(), opaque)
                })
                .collect();
            buf.drain(..end);
            return lines;
        }
        let k = stream.read(&mut chunk).await.unwrap();
        assert!(k > 0, "the client closed the connection");
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// A value that names its key, `len` bytes long.
fn value_of(key: &str, len: usize) -> Vec<u8> {
    let mut v = format!("{key}|").into_bytes();
    v.resize(len, b'v');
    v
}

/// The meta hit answering `key` with token `opaque`.
fn hit(key: &str, opaque: u32, len: usize) -> Vec<u8> {
    let mut out = format!("VA {len} f0 c1 k{key} O{opaque}\r\n").into_bytes();
    out.extend_from_slice(&value_of(key, len));
    out.extend_from_slice(b"\r\n");
    out
}

/// A lone caller dropped while its reply is half read: the rest of the reply is read and
/// thrown away, the connection stays open and in step, and the next call on it gets its
/// own value. Once with a small value (in the read buffer) and once with one large enough
/// to be read straight into the value.
#[test]
fn a_lone_caller_dropped_mid_reply_leaves_its_reply_read_and_the_connection_in_step() {
    for len in [200usize, 60_000] {
        let rt = runtime();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let t = meta(
                listener.local_addr().unwrap().to_string(),
                Duration::from_secs(5),
            );
            let (half_sent, half_read) = tokio::sync::oneshot::channel::<()>();
            let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let asked = read_gets(&mut s, &mut buf, 1).await;
                let (k, o) = &asked[0];
                let reply = hit(k, *o, len);
                let half = reply.len() / 2;
                s.write_all(&reply[..half]).await.unwrap();
                half_sent.send(()).unwrap();
                // The caller is dropped before the rest comes.
                dropped_rx.await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                s.write_all(&reply[half..]).await.unwrap();
                let asked = read_gets(&mut s, &mut buf, 1).await;
                let (k, o) = &asked[0];
                s.write_all(&hit(k, *o, 300)).await.unwrap();
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            });
            let first = t.clone();
            let call = tokio::spawn(async move { first.get(b"first").await });
            half_read.await.unwrap();
            // Time for the caller to read the first half.
            tokio::time::sleep(Duration::from_millis(50)).await;
            call.abort();
            assert!(call.await.unwrap_err().is_cancelled());
            dropped_tx.send(()).unwrap();
            // The rest of the dropped call's reply arrives and is read meanwhile: the
            // connection is idle again, and the next call goes the direct way too.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let item = t.get(b"second").await.unwrap().expect("a hit");
            assert_eq!(item.value, value_of("second", 300), "value of {len} bytes");
            let stats = t.io_stats();
            assert_eq!(stats.connections, 1, "{stats:?}");
            assert_eq!(stats.direct, 2, "both went the direct way: {stats:?}");
            drop(t);
            server.abort();
        });
    }
}

/// A lone caller on a server that reads and never answers: it fails with a timeout within
/// the read timeout, the connection is closed (the server sees it end), and the next call
/// goes on a new connection and is answered.
#[test]
fn a_lone_caller_on_a_hung_server_times_out_and_the_next_call_gets_a_new_connection() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = meta(listener.local_addr().unwrap().to_string(), TIMEOUT);
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<Duration>();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            read_gets(&mut s, &mut buf, 1).await;
            let asked_at = tokio::time::Instant::now();
            // Hung: nothing is answered; the client is to close the connection.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            closed_tx.send(asked_at.elapsed()).unwrap();
            let (mut s, _) = listener.accept().await.unwrap();
            let asked = read_gets(&mut s, &mut buf, 1).await;
            let (k, o) = &asked[0];
            s.write_all(&hit(k, *o, 10)).await.unwrap();
            let _ = s.read_to_end(&mut rest).await;
        });
        let started = tokio::time::Instant::now();
        let got = t.get(b"hung").await;
        let took = started.elapsed();
        assert!(matches!(got, Err(Error::Timeout { .. })), "{got:?}");
        assert!(
            took >= TIMEOUT && took < TIMEOUT + Duration::from_millis(250),
            "{took:?}"
        );
        assert_eq!(t.io_stats().direct, 1);
        // The connection is closed for the silence, within a fraction of the timeout more.
        let closed_after = tokio::time::timeout(Duration::from_secs(3), closed_rx)
            .await
            .expect("the hung connection was closed")
            .unwrap();
        assert!(
            closed_after < TIMEOUT * 2 + Duration::from_millis(250),
            "{closed_after:?}"
        );
        let item = t.get(b"after").await.unwrap().expect("a hit");
        assert_eq!(item.value, value_of("after", 10));
        assert_eq!(t.io_stats().connections, 2);
        drop(t);
        server.abort();
    });
}

/// A lone caller on the direct path, its reply held back until 63 more callers have
/// queued theirs: all 64 get their own values, on the one connection, the 63 in few
/// writes. The replies come in pieces that cut across the first caller's reply.
#[test]
fn a_lone_caller_joined_by_63_others_mid_flight_and_all_get_their_own_values() {
    const OTHERS: usize = 63;
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = meta(
            listener.local_addr().unwrap().to_string(),
            Duration::from_secs(5),
        );
        let (first_in, first_arrived) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut asked = read_gets(&mut s, &mut buf, 1).await;
            first_in.send(()).unwrap();
            while asked.len() < 1 + OTHERS {
                asked.extend(read_gets(&mut s, &mut buf, 1).await);
            }
            let mut replies = Vec::new();
            for (i, (k, o)) in asked.iter().enumerate() {
                // Values of every size: some read straight into the value.
                replies.extend_from_slice(&hit(k, *o, 50 + (i % 5) * 9_000));
            }
            // In pieces of 1000 bytes; the first ends inside the first caller's reply.
            for piece in replies.chunks(1000) {
                s.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        let first = {
            let t = t.clone();
            tokio::spawn(async move { t.get(b"k0").await })
        };
        first_arrived.await.unwrap();
        let others: Vec<_> = (1..=OTHERS)
            .map(|i| {
                let t = t.clone();
                tokio::spawn(async move { (i, t.get(format!("k{i}").as_bytes()).await) })
            })
            .collect();
        let item = first.await.unwrap().unwrap().expect("a hit");
        assert_eq!(item.value[..3], *b"k0|");
        for h in others {
            let (i, got) = h.await.unwrap();
            let item = got.unwrap().expect("a hit");
            let key = format!("k{i}|");
            assert!(
                item.value.starts_with(key.as_bytes()),
                "caller {i} got {:?}",
                String::from_utf8_lossy(&item.value[..10])
            );
        }
        let stats = t.io_stats();
        println!("{stats:?}");
        assert_eq!(stats.connections, 1);
        assert_eq!(stats.direct, 1, "{stats:?}");
        assert_eq!(stats.requests, 1 + OTHERS as u64);
        assert!(stats.writes < 20, "{stats:?}");
        drop(t);
        server.abort();
    });
}

/// Many lone calls in a row, some dropped at every stage (before their request is written,
/// mid-reply, after): every call that completes gets its own key's value, all on the one
/// connection, and the direct path is taken, by every lone call after them too.
#[test]
fn lone_calls_dropped_at_random_points_never_get_another_calls_value() {
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = meta(
            listener.local_addr().unwrap().to_string(),
            Duration::from_secs(5),
        );
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut n = 0u64;
            loop {
                let asked = read_gets(&mut s, &mut buf, 1).await;
                for (k, o) in asked {
                    n += 1;
                    let reply = hit(&k, o, 100 + (n as usize % 3) * 10_000);
                    // Replies in two pieces, a little apart.
                    let half = reply.len() / 3;
                    s.write_all(&reply[..half]).await.unwrap();
                    if n % 2 == 0 {
                        tokio::time::sleep(Duration::from_micros(300)).await;
                    }
                    s.write_all(&reply[half..]).await.unwrap();
                }
            }
        });
        let t = Arc::new(t);
        let mut answered = 0;
        let mut dropped = 0;
        for i in 0..300u64 {
            let key = format!("lone{i}");
            // Two calls in four wait for their answers: after the second (alone on the
            // connection) the next finds it idle after a lone caller's use, and goes the
            // direct way; the other two are given 0 to 2 ms.
            let limit = match i % 4 {
                0 | 1 => Duration::from_secs(5),
                _ => Duration::from_micros((i * 7919) % 2_000),
            };
            match tokio::time::timeout(limit, t.get(key.as_bytes())).await {
                Err(_) => dropped += 1,
                Ok(got) => {
                    let item = got.unwrap().expect("a hit");
                    let want = format!("{key}|");
                    assert!(item.value.starts_with(want.as_bytes()), "call {i}");
                    answered += 1;
                }
            }
        }
        // A last call after the dropped ones, with time to finish.
        let item = t.get(b"last").await.unwrap().expect("a hit");
        assert!(item.value.starts_with(b"last|"));
        let stats = t.io_stats();
        println!("{answered} answered, {dropped} dropped; {stats:?}");
        assert!(
            dropped > 20 && answered > 20,
            "{answered} answered, {dropped} dropped"
        );
        assert_eq!(stats.connections, 1, "{stats:?}");
        assert!(stats.direct >= 60, "{stats:?}");
        // No call that left keeps the next ones off the direct path (an answer nobody
        // took would): after one more call (the last one may have shared its stretch of
        // the connection with a dropped call's reply, so the next one queues), each of
        // twenty more lone calls takes it.
        let item = t.get(b"settle").await.unwrap().expect("a hit");
        assert!(item.value.starts_with(b"settle|"));
        let stats = t.io_stats();
        for i in 0..20 {
            let key = format!("after{i}");
            let item = t.get(key.as_bytes()).await.unwrap().expect("a hit");
            assert!(item.value.starts_with(format!("{key}|").as_bytes()));
        }
        let after = t.io_stats();
        assert_eq!(after.direct, stats.direct + 20, "{after:?}");
        assert_eq!(after.connections, 1, "{after:?}");
        server.abort();
    });
}

/// A lone caller's request larger than the socket takes at once (a 20 MB set to a server
/// that starts reading late): the caller writes what the socket takes, the connection's
/// task writes the rest and reads the reply, the caller gets its answer, and the next call
/// on the connection is answered right.
#[test]
fn a_lone_request_the_socket_does_not_take_whole_is_finished_by_the_connection_task() {
    const LEN: usize = 20 << 20;
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = TokioTextTransport::new(TextConfig {
            servers: vec![listener.local_addr().unwrap().to_string()],
            protocol: Protocol::Meta,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            item_size_limit: 32 << 20,
            ..TextConfig::default()
        })
        .unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Not reading yet: the client's send buffer fills.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            let line_end = loop {
                if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    break i + 1;
                }
                let k = s.read(&mut chunk).await.unwrap();
                assert!(k > 0);
                buf.extend_from_slice(&chunk[..k]);
            };
            let line = String::from_utf8_lossy(&buf[..line_end]).trim().to_string();
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(&fields[..3], &["ms", "big", &LEN.to_string()], "{line}");
            let o: u32 = fields
                .iter()
                .find_map(|f| f.strip_prefix('O'))
                .unwrap()
                .parse()
                .unwrap();
            while buf.len() < line_end + LEN + 2 {
                let k = s.read(&mut chunk).await.unwrap();
                assert!(k > 0);
                buf.extend_from_slice(&chunk[..k]);
            }
            let data = &buf[line_end..line_end + LEN];
            assert!(data.iter().all(|&b| b == b'z'), "the value arrived whole");
            assert_eq!(&buf[line_end + LEN..line_end + LEN + 2], b"\r\n");
            buf.drain(..line_end + LEN + 2);
            s.write_all(format!("HD kbig O{o}\r\n").as_bytes())
                .await
                .unwrap();
            let asked = read_gets(&mut s, &mut buf, 1).await;
            let (k, o) = &asked[0];
            s.write_all(&hit(k, *o, 10)).await.unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        let value = vec![b'z'; LEN];
        let status = t
            .store(&newcache_transport::Store::set(b"big", &value, 0, 0))
            .await
            .unwrap();
        assert!(status.is_stored(), "{status:?}");
        let item = t.get(b"small").await.unwrap().expect("a hit");
        assert_eq!(item.value, value_of("small", 10));
        let stats = t.io_stats();
        println!("{stats:?}");
        assert_eq!(stats.connections, 1);
        assert_eq!(stats.direct, 2, "{stats:?}");
        // The store's first part by its caller, the rest by the task, the get by its caller.
        assert_eq!(stats.writes, 3, "{stats:?}");
        drop(t);
        server.abort();
    });
}

/// After lone calls on the direct path the connection is idle, watched by its task again:
/// it is closed after the idle timeout with no request to trigger it, and the next call
/// opens a new one.
#[test]
fn an_idle_connection_is_closed_after_lone_calls_and_the_next_call_opens_another() {
    const IDLE: Duration = Duration::from_millis(300);
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = TokioTextTransport::new(TextConfig {
            servers: vec![listener.local_addr().unwrap().to_string()],
            protocol: Protocol::Meta,
            read_timeout: Duration::from_millis(200),
            idle_timeout: IDLE,
            ..TextConfig::default()
        })
        .unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<Duration>();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            for _ in 0..20 {
                let asked = read_gets(&mut s, &mut buf, 1).await;
                for (k, o) in asked {
                    s.write_all(&hit(&k, o, 10)).await.unwrap();
                }
            }
            let last = tokio::time::Instant::now();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            closed_tx.send(last.elapsed()).unwrap();
            let (mut s, _) = listener.accept().await.unwrap();
            let asked = read_gets(&mut s, &mut buf, 1).await;
            let (k, o) = &asked[0];
            s.write_all(&hit(k, *o, 10)).await.unwrap();
            let _ = s.read_to_end(&mut rest).await;
        });
        for i in 0..20 {
            let key = format!("idle{i}");
            let item = t.get(key.as_bytes()).await.unwrap().expect("a hit");
            assert_eq!(item.value, value_of(&key, 10));
        }
        assert_eq!(t.io_stats().direct, 20);
        let idle_for = tokio::time::timeout(Duration::from_secs(3), closed_rx)
            .await
            .expect("the idle connection was closed")
            .unwrap();
        assert!(
            idle_for >= IDLE - Duration::from_millis(20) && idle_for < IDLE * 3,
            "closed after {idle_for:?} idle"
        );
        let item = t.get(b"again").await.unwrap().expect("a hit");
        assert_eq!(item.value, value_of("again", 10));
        assert_eq!(t.io_stats().connections, 2);
        drop(t);
        server.abort();
    });
}

/// A server that answers every request 700 ms late, against a 300 ms read timeout: each
/// call fails with `Error::Timeout` after the timeout, alone or beside others. A call that
/// came while the connection was being closed for the one before used to fail at once with
/// an I/O error saying the connection's task had ended "(its tokio runtime shut down)", when
/// the runtime was alive and the request never sent: now it is sent on a new connection.
#[test]
fn calls_after_a_timeout_go_on_a_new_connection_and_time_out_themselves() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = tokio::io::BufReader::new(r);
                    let mut line = String::new();
                    use tokio::io::AsyncBufReadExt;
                    while lines.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                        line.clear();
                        tokio::time::sleep(Duration::from_millis(700)).await;
                        if w.write_all(b"END\r\n").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let t = TokioTextTransport::new(TextConfig {
            servers: vec![addr],
            protocol: Protocol::Classic,
            read_timeout: TIMEOUT,
            ..TextConfig::default()
        })
        .unwrap();
        // One after another (each comes as the connection of the one before is closed),
        // then three at a time.
        for call in 0..6 {
            let started = tokio::time::Instant::now();
            let got = t.get(format!("slow:{call}").as_bytes()).await;
            let took = started.elapsed();
            assert!(
                matches!(got, Err(Error::Timeout { .. })) && took >= TIMEOUT,
                "call {call}: {got:?} after {took:?}"
            );
        }
        let t = Arc::new(t);
        for round in 0..3 {
            let mut calls = Vec::new();
            for i in 0..3 {
                let t = t.clone();
                calls.push(tokio::spawn(async move {
                    let started = tokio::time::Instant::now();
                    let got = t.get(format!("slow:{i}").as_bytes()).await;
                    (started.elapsed(), got)
                }));
            }
            for call in calls {
                let (took, got) = call.await.unwrap();
                assert!(
                    matches!(got, Err(Error::Timeout { .. })) && took >= TIMEOUT,
                    "round {round}: {got:?} after {took:?}"
                );
            }
        }
        server.abort();
    });
}
