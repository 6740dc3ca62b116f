//! The counters after a scripted scene on a real memcached, read as Prometheus text through
//! examples/prometheus.rs's exporter: hits, misses, a herd claim won and one lost (a stale
//! value served), a loader run, errors by kind.
#![cfg(all(feature = "metrics", feature = "text"))]

#[path = "../examples/prometheus.rs"]
mod example;

use std::collections::HashMap;

use metrics_exporter_prometheus::PrometheusBuilder;
use newcache::{Cache, Ttl};
use newcache_testkit::Memcached;

/// Every sample of the Prometheus text, by its series (`name{labels}`).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_scripted_scene_is_counted() {
    let server = Memcached::start();
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let url = format!("newcache://{}/?name=shop&herd=meta", server.addr());
    metrics::with_local_recorder(&recorder, || {
        let cache = Cache::from_url(&url).unwrap();
        example::scene(&cache).unwrap();
        // An invalidation: the next reader wins the refresh (a claim won), the one after is
        // served the stale value while it runs (a claim lost).
        cache.set("report", "v1", Ttl::Seconds(300)).unwrap();
        assert!(cache.invalidate("report").unwrap());
        assert_eq!(cache.get::<String>("report").unwrap(), None);
        assert_eq!(
            cache.get::<String>("report").unwrap().as_deref(),
            Some("v1")
        );
        // A get_many with one value that does not decode: the call succeeds, the key is
        // counted as an error of get_many.
        cache
            .set("word", "not a number", Ttl::Seconds(300))
            .unwrap();
        cache.set("num", &5u32, Ttl::Seconds(300)).unwrap();
        let got = cache.get_many::<_, u32>(&["word", "num"]).unwrap();
        assert_eq!(got.failed().len(), 1);
        // A loader run through get_or_set.
        let v: u32 = cache.get_or_set("cold", 60, || 7).unwrap();
        assert_eq!(v, 7);
        // A server that is not there: an error by kind and server.
        let down =
            Cache::from_url("newcache://127.0.0.1:1/?name=down&connect_timeout=100").unwrap();
        assert!(down.get::<String>("k").is_err());
    });
    let text = prometheus.render();
    let s = samples(&text);
    let get = |series: &str| {
        *s.get(series)
            .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
    };
    assert_eq!(get(r#"newcache_hits_total{cache="shop",op="get"}"#), 3.0);
    assert_eq!(get(r#"newcache_misses_total{cache="shop",op="get"}"#), 2.0);
    assert_eq!(
        get(r#"newcache_herd_claims_total{cache="shop",op="get",result="won"}"#),
        1.0
    );
    assert_eq!(
        get(r#"newcache_herd_claims_total{cache="shop",op="get",result="lost"}"#),
        1.0
    );
    assert_eq!(
        get(r#"newcache_stale_served_total{cache="shop",op="get"}"#),
        1.0
    );
    assert_eq!(
        get(r#"newcache_misses_total{cache="shop",op="get_or_set"}"#),
        1.0
    );
    assert_eq!(get(r#"newcache_loader_runs_total{cache="shop"}"#), 1.0);
    assert_eq!(
        get(r#"newcache_errors_total{cache="shop",op="incr",kind="not_found",server=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"newcache_errors_total{cache="shop",op="get_many",kind="decode",server=""}"#),
        1.0
    );
    assert_eq!(
        get(r#"newcache_operations_total{cache="shop",op="get",outcome="ok"}"#),
        5.0
    );
    assert_eq!(
        get(r#"newcache_operation_duration_seconds_count{cache="shop",op="get"}"#),
        5.0
    );
    let down = s
        .iter()
        .find(|(k, _)| {
            k.starts_with(r#"newcache_errors_total{cache="down",op="get",kind="connect""#)
        })
        .unwrap_or_else(|| panic!("no connect error counted:\n{text}"));
    assert!(down.0.contains("127.0.0.1:1"), "{}", down.0);
    // Never a key in a label.
    assert!(!text.contains("report") && !text.contains("page"), "{text}");
}

/// An async call whose future is dropped before it completes (a `tokio::time::timeout`
/// around it, the pattern the README shows) is counted with outcome `cancelled`; it was
/// counted nowhere, so a service whose calls all hit its own deadline showed no errors.
#[cfg(feature = "tokio")]
#[test]
fn a_cancelled_async_call_is_counted() {
    // A server that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let cache = Cache::builder()
                .servers([addr.to_string()])
                .name("impatient")
                .build_async()
                .unwrap();
            for _ in 0..5 {
                let got = tokio::time::timeout(
                    std::time::Duration::from_millis(20),
                    cache.get::<String>("k"),
                )
                .await;
                assert!(got.is_err(), "the caller gave up first");
            }
        })
    });
    let s = samples(&prometheus.render());
    assert_eq!(
        s.get(r#"newcache_operations_total{cache="impatient",op="get",outcome="cancelled"}"#),
        Some(&5.0),
        "{s:?}"
    );
    drop(silent);
}

/// What an outside audit found uncounted or miscounted: `gets`, `get_and_touch` and
/// `get_raw` counted no hits or misses; a `set_many` or `delete_many` with two servers down
/// counted one error, by the first; a panicking `get_or_set` loader was an operation
/// `cancelled` and no loader run.
#[test]
fn reads_with_cas_partial_batches_and_panicking_loaders_are_counted() {
    let server = Memcached::start();
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let url = format!("newcache://{}/?name=ops&herd=off", server.addr());
    // Two ports nothing listens on beside the live server: most keys of a batch land on them.
    let dead = [free_port(), free_port()];
    let cluster = format!(
        "newcache://{};127.0.0.1:{};127.0.0.1:{}/?name=batch&connect_timeout=200",
        server.addr(),
        dead[0],
        dead[1]
    );
    metrics::with_local_recorder(&recorder, || {
        let cache = Cache::from_url(&url).unwrap();
        cache.set("there", "v", Ttl::Seconds(300)).unwrap();
        assert!(cache.gets::<String>("there").unwrap().is_some());
        assert!(cache.gets::<String>("absent").unwrap().is_none());
        assert!(cache.get_raw("there").unwrap().is_some());
        assert!(cache
            .get_and_touch::<String>("absent", Ttl::Seconds(60))
            .unwrap()
            .is_none());
        let boom = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<u32, _> = cache.get_or_set("boom", 60, || panic!("loader panicked"));
        }));
        assert!(boom.is_err());

        let batch = Cache::from_url(&cluster).unwrap();
        let pairs: Vec<(String, u32)> = (0..30).map(|i| (format!("k{i}"), i)).collect();
        assert!(batch.set_many(pairs, Ttl::Seconds(60)).is_err());
    });
    let text = prometheus.render();
    let s = samples(&text);
    let get = |series: &str| {
        *s.get(series)
            .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
    };
    assert_eq!(get(r#"newcache_hits_total{cache="ops",op="gets"}"#), 1.0);
    assert_eq!(get(r#"newcache_misses_total{cache="ops",op="gets"}"#), 1.0);
    assert_eq!(get(r#"newcache_hits_total{cache="ops",op="get_raw"}"#), 1.0);
    assert_eq!(
        get(r#"newcache_misses_total{cache="ops",op="get_and_touch"}"#),
        1.0
    );
    assert_eq!(
        get(r#"newcache_operations_total{cache="ops",op="get_or_set",outcome="panicked"}"#),
        1.0
    );
    assert_eq!(get(r#"newcache_loader_runs_total{cache="ops"}"#), 1.0);
    assert_eq!(get(r#"newcache_loader_errors_total{cache="ops"}"#), 1.0);
    // Each key a dead server could not take, under that server.
    let mut per_server = 0.0;
    for port in dead {
        let series = s
            .iter()
            .find(|(k, _)| {
                k.starts_with(r#"newcache_errors_total{cache="batch",op="set_many""#)
                    && k.contains(&format!("127.0.0.1:{port}"))
            })
            .unwrap_or_else(|| panic!("no error counted for :{port}:\n{text}"));
        per_server += series.1;
    }
    assert!(
        per_server > 2.0 && per_server <= 30.0,
        "{per_server}\n{text}"
    );
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What another outside audit found miscounted: loaders whose async `get_or_set` was
/// dropped mid-load (a timeout around it) counted no run; a call dropped while its caller
/// panicked elsewhere (another branch of a `join!`) was `panicked`, though nothing of
/// newcache's panicked; `decr_version` was labelled `incr_version`.
#[cfg(feature = "tokio")]
#[test]
fn cut_loaders_a_callers_panic_and_decr_version_are_counted_as_such() {
    let server = Memcached::start();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        let url = format!("newcache://{}/?name=cut", server.addr());
        let cache = rt
            .block_on(async { newcache::AsyncCache::from_url(&url) })
            .unwrap();
        rt.block_on(async {
            for i in 0..3 {
                let got = tokio::time::timeout(
                    std::time::Duration::from_millis(50),
                    cache.get_or_set(&format!("slow{i}"), 60, || async {
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        1u32
                    }),
                )
                .await;
                assert!(got.is_err(), "the caller gave up first");
            }
        });
        let hung = rt
            .block_on(async {
                Cache::builder()
                    .servers([silent.local_addr().unwrap().to_string()])
                    .name("elsewhere")
                    .build_async()
            })
            .unwrap();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async {
                let _ = tokio::join!(hung.get::<String>("k"), async {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    panic!("the caller's own panic")
                });
            })
        }));
        assert!(unwound.is_err());
        let blocking = Cache::from_url(&url).unwrap();
        blocking.set("v", "x", Ttl::Seconds(60)).unwrap();
        assert_eq!(blocking.decr_version("v", 1).unwrap(), 0);
    });
    let s = samples(&prometheus.render());
    let get = |series: &str| s.get(series).copied();
    assert_eq!(
        get(r#"newcache_loader_runs_total{cache="cut"}"#),
        Some(3.0),
        "{s:?}"
    );
    assert_eq!(
        get(r#"newcache_loader_errors_total{cache="cut"}"#),
        Some(3.0),
        "{s:?}"
    );
    assert_eq!(
        get(r#"newcache_operations_total{cache="elsewhere",op="get",outcome="cancelled"}"#),
        Some(1.0),
        "{s:?}"
    );
    assert_eq!(
        get(r#"newcache_operations_total{cache="elsewhere",op="get",outcome="panicked"}"#),
        None,
        "{s:?}"
    );
    assert_eq!(
        get(r#"newcache_operations_total{cache="cut",op="decr_version",outcome="ok"}"#),
        Some(1.0),
        "{s:?}"
    );
    drop(silent);
}
