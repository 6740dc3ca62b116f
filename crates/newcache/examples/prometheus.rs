//! newcache's metrics as Prometheus text: a cache named `shop` (`name=shop` in the URL), a
//! few operations, and what an exporter would serve at `/metrics`. Any other `metrics`
//! exporter (StatsD, OpenTelemetry...) reads the same counters.
//!
//! ```sh
//! memcached -p 11211 &
//! NEWCACHE_URL='newcache://127.0.0.1:11211/?name=shop' \
//!     cargo run -p newcache --features metrics --example prometheus
//! ```

use newcache::{Cache, Ttl};

/// A scene to count: two hits, a miss, and a counter that is not there.
pub fn scene(cache: &Cache) -> Result<(), newcache::Error> {
    cache.set("page", "<h1>home</h1>", Ttl::Seconds(60))?;
    for _ in 0..2 {
        cache.get::<String>("page")?;
    }
    cache.get::<String>("nothing")?;
    let _ = cache.incr("visits", 1);
    Ok(())
}

#[allow(dead_code)] // the test runs `scene`, not `main`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let url = std::env::var("NEWCACHE_URL")
        .unwrap_or_else(|_| "newcache://127.0.0.1:11211/?name=shop".to_string());
    let cache = Cache::from_url(&url)?;
    scene(&cache)?;
    // What a scrape of /metrics returns (serve it from your HTTP server of choice).
    print!("{}", prometheus.render());
    Ok(())
}
