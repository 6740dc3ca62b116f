//! Get hits of 100 bytes through one async text transport (`TokioTextTransport`) from 1, 16
//! and 64 tokio tasks, in the classic protocol (one request per connection at a time, a
//! pool of `max_connections`) and in meta (pipelined on one connection), on a memcached
//! of its own (`-t 2`): gets per second and connections opened. The cost of not
//! pipelining untagged replies (docs/design.md).
//!
//! ```text
//! cargo run --release -p newcache-benches --example async_protocols [SECONDS]
//! ```

use std::time::{Duration, Instant};

use newcache_testkit::Memcached;
use newcache_transport::{AsyncTransport, Store};
use newcache_transport_text::{Protocol, TextConfig, TokioTextTransport};

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let server = Memcached::with_args(&["-t", "2"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for protocol in [Protocol::Classic, Protocol::Meta] {
        for tasks in [1usize, 16, 64] {
            let t = TokioTextTransport::new(TextConfig {
                servers: vec![server.addr()],
                protocol,
                ..TextConfig::default()
            })
            .expect("transport");
            let gets = rt.block_on(async {
                for i in 0..tasks {
                    let key = format!("ap:{i}");
                    t.store(&Store::set(key.as_bytes(), &[b'x'; 100], 0, 0))
                        .await
                        .expect("set");
                }
                let until = Instant::now() + Duration::from_secs_f64(secs);
                let handles: Vec<_> = (0..tasks)
                    .map(|i| {
                        let t = t.clone();
                        tokio::spawn(async move {
                            let key = format!("ap:{i}");
                            let mut n = 0u64;
                            while Instant::now() < until {
                                let hit = t.get(key.as_bytes()).await.expect("get");
                                assert!(hit.is_some(), "a hit");
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                let mut gets = 0;
                for h in handles {
                    gets += h.await.expect("task");
                }
                gets
            });
            println!(
                "{protocol:?}\t{tasks} tasks\t{:.0} gets/s\t{} connections",
                gets as f64 / secs,
                t.io_stats().connections
            );
        }
    }
}
