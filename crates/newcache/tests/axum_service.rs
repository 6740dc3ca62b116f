//! Runs examples/axum_service.rs against a real memcached: 64 concurrent requests for one
//! user are answered with its name, and the slow lookup ran once.
#![cfg(feature = "tokio")]

#[path = "../examples/axum_service.rs"]
mod service;

use std::sync::atomic::Ordering;

use newcache::AsyncCache;
use newcache_testkit::Memcached;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 GET on a fresh connection: (status, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_service_reads_through_with_one_lookup() {
    let server = Memcached::start();
    let cache = AsyncCache::from_url(&format!("newcache://{}/", server.addr())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, service::app(cache)).await });

    let requests: Vec<_> = (0..64)
        .map(|_| tokio::spawn(http_get(addr, "/users/7")))
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), (200, "user 7".to_string()));
    }
    assert_eq!(service::LOOKUPS.load(Ordering::SeqCst), 1);
    // Cached: no second lookup.
    assert_eq!(
        http_get(addr, "/users/7").await,
        (200, "user 7".to_string())
    );
    assert_eq!(service::LOOKUPS.load(Ordering::SeqCst), 1);
    assert_eq!(http_get(addr, "/users/8").await.0, 200);
    assert_eq!(service::LOOKUPS.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_cache_that_cannot_be_reached_is_a_503() {
    // Nothing listens on port 1.
    let cache =
        AsyncCache::from_url("newcache://127.0.0.1:1/?connect_timeout=100&read_timeout=100")
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, service::app(cache)).await });
    assert_eq!(http_get(addr, "/users/1").await.0, 503);
}
