//! The async transport against a scripted server (a tokio listener that answers what the
//! test says, byte for byte): what happens to the requests in flight when a reply does not
//! answer its request, and to bytes nobody asked for.
#![cfg(feature = "tokio")]

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

/// Reads `n` meta get lines: each one's key and opaque token.
async fn read_gets(stream: &mut TcpStream, n: usize) -> Vec<(String, u32)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let lines: Vec<&[u8]> = buf
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"mg "))
            .collect();
        if lines.len() >= n && buf.ends_with(b"\n") {
            return lines
                .iter()
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
        }
        let k = stream.read(&mut chunk).await.unwrap();
        assert!(k > 0, "the client closed the connection");
        buf.extend_from_slice(&chunk[..k]);
    }
}

fn meta(addr: String) -> TokioTextTransport {
    TokioTextTransport::new(TextConfig {
        servers: vec![addr],
        protocol: Protocol::Meta,
        read_timeout: Duration::from_secs(2),
        ..TextConfig::default()
    })
    .unwrap()
}

#[test]
fn a_reply_with_another_token_fails_every_request_in_flight() {
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = meta(listener.local_addr().unwrap().to_string());
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let asked = read_gets(&mut s, 3).await;
            let (k1, o1) = &asked[0];
            let (k3, o3) = &asked[2];
            // The first answered, then the first's reply again where the second's is due,
            // then the third's own.
            let reply = format!("EN k{k1} O{o1}\r\nEN k{k1} O{o1}\r\nEN k{k3} O{o3}\r\n");
            s.write_all(reply.as_bytes()).await.unwrap();
            // A new connection is answered right.
            let (mut s, _) = listener.accept().await.unwrap();
            let asked = read_gets(&mut s, 1).await;
            let (k, o) = &asked[0];
            s.write_all(format!("VA 2 f0 c9 k{k} O{o}\r\nok\r\n").as_bytes())
                .await
                .unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        let (a, b, c) = tokio::join!(t.get(b"a"), t.get(b"b"), t.get(b"c"));
        let outcomes = [a, b, c];
        // Replies come in order, and a reply is handed over only once what follows it
        // checks out: the stray reply where the second's is due fails every request in
        // flight, the first's too (the stray bytes could as well have ended the first's
        // value: a reply is never handed over with another's bytes in it), and nothing is
        // delivered from the stray reply on, whichever request it would have fitted.
        let refused = outcomes
            .iter()
            .filter(|o| matches!(o, Err(Error::Protocol { .. })))
            .count();
        assert_eq!(refused, 3, "{outcomes:?}");
        let item = t
            .get(b"d")
            .await
            .unwrap()
            .expect("a hit on a new connection");
        assert_eq!(item.value, b"ok");
        assert_eq!(t.io_stats().connections, 2);
        drop(t);
        server.abort();
    });
}

#[test]
fn bytes_nobody_asked_for_close_the_connection_and_reach_no_request() {
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = meta(listener.local_addr().unwrap().to_string());
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let asked = read_gets(&mut s, 1).await;
            let (k, o) = &asked[0];
            s.write_all(format!("EN k{k} O{o}\r\n").as_bytes())
                .await
                .unwrap();
            // Unasked: a hit for the key the next request will ask, with its next token.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let next = o.wrapping_add(1);
            s.write_all(format!("VA 5 f0 c1 kx O{next}\r\nstale\r\n").as_bytes())
                .await
                .unwrap();
            let (mut s2, _) = listener.accept().await.unwrap();
            let asked = read_gets(&mut s2, 1).await;
            let (k, o) = &asked[0];
            s2.write_all(format!("EN k{k} O{o}\r\n").as_bytes())
                .await
                .unwrap();
            let mut rest = Vec::new();
            let _ = s2.read_to_end(&mut rest).await;
        });
        assert_eq!(t.get(b"a").await.unwrap(), None);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The stray hit closed the first connection; this get goes on a new one.
        assert_eq!(t.get(b"x").await.unwrap(), None);
        assert_eq!(t.io_stats().connections, 2);
        drop(t);
        server.abort();
    });
}

#[test]
fn a_request_that_times_out_leaves_the_connection_and_later_requests_alone() {
    const TIMEOUT: Duration = Duration::from_millis(400);
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = TokioTextTransport::new(TextConfig {
            servers: vec![listener.local_addr().unwrap().to_string()],
            protocol: Protocol::Meta,
            read_timeout: TIMEOUT,
            ..TextConfig::default()
        })
        .unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let asked = read_gets(&mut s, 1).await;
            let (k, o) = &asked[0];
            // A 60 KB value streamed 1 KB every 10 ms: bytes keep coming (the connection
            // is alive) past the read timeout, until the next request has arrived; then the
            // rest at once.
            s.write_all(format!("VA 60000 f0 c1 k{k} O{o}\r\n").as_bytes())
                .await
                .unwrap();
            let mut sent = 0;
            let mut early = Vec::new();
            let mut chunk = [0u8; 4096];
            let started = tokio::time::Instant::now();
            while sent < 59_000 && (!early.ends_with(b"\n") || started.elapsed() < TIMEOUT) {
                s.write_all(&[b'v'; 1000]).await.unwrap();
                sent += 1000;
                tokio::time::sleep(Duration::from_millis(10)).await;
                if let Ok(k) = s.try_read(&mut chunk) {
                    early.extend_from_slice(&chunk[..k]);
                }
            }
            assert!(
                early.starts_with(b"mg "),
                "the next request came while the slow reply streamed"
            );
            s.write_all(&vec![b'v'; 60_000 - sent]).await.unwrap();
            s.write_all(b"\r\n").await.unwrap();
            let line = String::from_utf8_lossy(&early).trim().to_string();
            let fields: Vec<&str> = line.split(' ').collect();
            let o: u32 = fields
                .iter()
                .find_map(|f| f.strip_prefix('O'))
                .unwrap()
                .parse()
                .unwrap();
            let asked = [(fields[1].to_string(), o)];
            let (k, o) = &asked[0];
            s.write_all(format!("VA 2 f0 c2 k{k} O{o}\r\nok\r\n").as_bytes())
                .await
                .unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        let started = tokio::time::Instant::now();
        let slow = t.get(b"slow").await;
        assert!(matches!(slow, Err(Error::Timeout { .. })), "{slow:?}");
        let took = started.elapsed();
        assert!(took < TIMEOUT + Duration::from_millis(250), "{took:?}");
        // Queued while the slow reply still streams in: answered right after it, on the
        // same connection.
        let item = t.get(b"next").await.unwrap().expect("a hit");
        assert_eq!(item.value, b"ok");
        assert_eq!(t.io_stats().connections, 1);
        drop(t);
        server.abort();
    });
}

/// A server that answers `stats` with `STAT` lines and never an `END`: the lines were
/// collected without end (an outside audit: 1 GB in 6 s, the caller's timeout never looked
/// at). Past 16,384 lines the reply is a protocol error, in well under the read timeout.
#[test]
fn a_stats_reply_that_never_ends_is_an_error_not_a_heap() {
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = meta(listener.local_addr().unwrap().to_string());
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut asked = [0u8; 64];
            let _ = s.read(&mut asked).await;
            let lines: String = (0..2000)
                .map(|i| format!("STAT k{i} {}\r\n", "v".repeat(100)))
                .collect();
            while s.write_all(lines.as_bytes()).await.is_ok() {}
        });
        let started = std::time::Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(10), t.stats())
            .await
            .expect("the call returns");
        let took = started.elapsed();
        let Err(Error::Protocol { detail, .. }) = got else {
            panic!("{got:?}")
        };
        assert!(detail.contains("16384 lines"), "{detail}");
        assert!(
            took < Duration::from_secs(1),
            "{took:?}: before the read timeout (2 s)"
        );
    });
}
