//! The get path allocates nothing beyond the value it returns: dhat's counting allocator
//! (this test binary's global allocator) counts the heap allocations of one call against a
//! real memcached, after a warm-up that fills the connection pool and its buffers.

use newcache::{Cache, SetOptions, Ttl};
use newcache_testkit::Memcached;
use newcache_transport::{AsyncTransport, Store, Transport};
use newcache_transport_text::{TextConfig, TextTransport, TokioTextTransport};

// dhat's allocator counts every heap allocation of the process (the unsafe allocator code
// lives in dhat, not here). One profiler per process: the checks run in one test.
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Allocations (and reallocations) made by `f`, and its result.
fn count<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = dhat::HeapStats::get().total_blocks;
    let out = f();
    let after = dhat::HeapStats::get().total_blocks;
    (usize::try_from(after - before).unwrap_or(usize::MAX), out)
}

/// Runs `f` a few times first (pool, buffers), then counts one call.
fn steady<T>(mut f: impl FnMut() -> T) -> (usize, T) {
    for _ in 0..3 {
        drop(f());
    }
    // The transport's background threads (idle sweeper, closer) start with its first
    // connection, and a new thread's own start-up allocates on that thread a little later:
    // let it finish before counting (dhat counts every thread's allocations).
    std::thread::sleep(std::time::Duration::from_millis(100));
    count(f)
}

#[test]
fn the_get_path_allocates_nothing_beyond_the_returned_value() {
    let _profiler = dhat::Profiler::builder().testing().build();
    text_transport_get();
    facade_get();
    get_many();
    async_get();
}

fn text_transport_get() {
    let server = Memcached::start();
    let t = TextTransport::new(TextConfig {
        servers: vec![server.addr()],
        ..TextConfig::default()
    })
    .unwrap();
    t.store(&Store::set(b"k", &[7u8; 100], 0, 0)).unwrap();
    let (n, item) = steady(|| t.get(b"k").unwrap());
    assert_eq!(item.unwrap().value.len(), 100);
    assert_eq!(n, 1, "allocations per get hit (1 = the value)");
    let (n, miss) = steady(|| t.get(b"absent").unwrap());
    assert!(miss.is_none());
    assert_eq!(n, 0, "allocations per get miss");
}

fn facade_get() {
    let server = Memcached::start();
    let cache = Cache::from_url(&format!("newcache://{}/?flavor=alloc", server.addr())).unwrap();
    cache
        .set("bytes", &vec![7u8; 100], Ttl::Seconds(300))
        .unwrap();
    cache
        .set("text", &"x".repeat(100), Ttl::Seconds(300))
        .unwrap();
    cache
        .set("bare", &"y".repeat(100), SetOptions::new(Ttl::Forever))
        .unwrap();

    let (n, raw) = steady(|| cache.get_raw("bytes").unwrap());
    assert_eq!(raw.unwrap().bytes.len(), 100);
    assert_eq!(n, 1, "allocations per get_raw hit (1 = the value)");

    // A typed get of text hands the bytes read off the wire over as the String (the
    // envelope's header removed in place): one allocation, the value itself.
    let (n, s) = steady(|| cache.get::<String>("text").unwrap());
    assert_eq!(s.unwrap().len(), 100);
    assert_eq!(n, 1, "allocations per get::<String> hit, herd envelope on");

    let (n, s) = steady(|| cache.get::<String>("bare").unwrap());
    assert_eq!(s.unwrap().len(), 100);
    assert_eq!(n, 1, "allocations per get::<String> hit, no envelope");

    // A struct is decoded out of the bytes read: those bytes, and what the struct owns.
    let (n, v) = {
        cache
            .set("list", &vec![1u32, 2, 3], Ttl::Seconds(300))
            .unwrap();
        steady(|| cache.get::<Vec<u32>>("list").unwrap())
    };
    assert_eq!(v.unwrap(), [1, 2, 3]);
    assert_eq!(
        n, 2,
        "allocations per get::<Vec<u32>> hit (the bytes read, the Vec)"
    );

    let (n, v) = steady(|| cache.get::<u64>("absent-number").unwrap());
    assert!(v.is_none());
    assert_eq!(n, 0);

    let (n, miss) = steady(|| cache.get::<String>("absent").unwrap());
    assert!(miss.is_none());
    assert_eq!(n, 0, "allocations per get miss");
}

fn get_many() {
    let one = [Memcached::start()];
    // Through the facade: the 100 values, the returned map's 3 buffers (its keys back to
    // back, its entries, its index table), and the bookkeeping of one multi-get sent whole
    // (`Transport::get_many_made`): the transport's reply (boxed), its values' list, their
    // keys' buffer and the list of items it hands over; 107 in all. The wire keys' buffer
    // and their ends are the thread's, kept from its last multi-get, and the list of the
    // made keys is on the stack (`KEYS_ON_STACK`).
    {
        let cache =
            Cache::from_url(&format!("newcache://{}/?flavor=alloc", one[0].addr())).unwrap();
        let keys: Vec<String> = (0..100).map(|i| format!("facade:{i}")).collect();
        cache
            .set_many(
                keys.iter().map(|k| (k.as_str(), "v".repeat(100))),
                Ttl::Seconds(300),
            )
            .unwrap();
        let (n, got) = steady(|| cache.get_many::<_, String>(&keys).unwrap());
        assert_eq!(got.len(), 100);
        assert!(
            n <= 100 + 3 + 4,
            "allocations per Cache::get_many::<String> of 100: {n}"
        );
    }
    let three = [Memcached::start(), Memcached::start(), Memcached::start()];
    let keys: Vec<Vec<u8>> = (0..100).map(|i| format!("many:{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    // Bookkeeping: on one server the reply (boxed: it holds its first key inline), its
    // value list and the buffer of its keys; on three, per server its batch, positions,
    // reply list, reply, value list and keys' buffer (22 in all).
    for (servers, bookkeeping) in [(&one[..], 3), (&three[..], 22)] {
        let t = TextTransport::new(TextConfig {
            servers: servers.iter().map(Memcached::addr).collect(),
            ..TextConfig::default()
        })
        .unwrap();
        for k in &refs {
            t.store(&Store::set(k, &[1u8; 100], 0, 0)).unwrap();
        }
        let (n, items) = steady(|| t.get_many(&refs).unwrap());
        assert!(items.iter().all(Option::is_some));
        assert!(
            n <= 100 + 1 + bookkeeping,
            "allocations per get_many of 100 on {} server(s): {n}",
            servers.len()
        );
    }
}

/// On tokio, a lone caller's get hit (the direct path: it writes and reads in its own
/// task) allocates the value and the transport's boxed future (`AsyncTransport`'s methods
/// return a `BoxFuture`), and nothing for the reply it awaits or the answer it gets.
fn async_get() {
    let server = Memcached::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(async {
        TokioTextTransport::new(TextConfig {
            servers: vec![server.addr()],
            ..TextConfig::default()
        })
        .unwrap()
    });
    rt.block_on(t.store(&Store::set(b"k", &[7u8; 100], 0, 0)))
        .unwrap();
    let (n, item) = steady(|| rt.block_on(t.get(b"k")).unwrap());
    assert_eq!(item.unwrap().value.len(), 100);
    assert_eq!(
        n, 2,
        "allocations per async transport get hit (the value and the boxed future)"
    );
    let cache = rt.block_on(async {
        Cache::builder()
            .servers([server.addr()])
            .build_async()
            .unwrap()
    });
    rt.block_on(cache.set("hit", &"x".repeat(100), Ttl::Seconds(3600)))
        .unwrap();
    let (n, s) = steady(|| rt.block_on(cache.get::<String>("hit")).unwrap());
    assert_eq!(s.unwrap().len(), 100);
    assert_eq!(
        n, 2,
        "allocations per AsyncCache::get::<String> hit (the value and the transport's boxed future)"
    );
}
