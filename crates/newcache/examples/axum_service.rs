//! An axum service that reads through memcached with [`AsyncCache::get_or_set`]: however
//! many requests for one user arrive at once, across tasks and processes, the slow lookup
//! runs once per expiry, and the others get its value (or, once it expires, the old value
//! while one request refreshes it).
//!
//! ```sh
//! memcached -p 11211 &
//! NEWCACHE_URL=newcache://127.0.0.1:11211/ cargo run -p newcache --features tokio --example axum_service
//! curl http://127.0.0.1:3000/users/7
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use newcache::{AsyncCache, Ttl};

/// How many times the slow lookup ran (the test reads it).
pub static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

/// The service: `GET /users/{id}` answers with the user's name, read through the cache.
pub fn app(cache: AsyncCache) -> Router {
    Router::new()
        .route("/users/{id}", get(user))
        .with_state(cache)
}

async fn user(
    State(cache): State<AsyncCache>,
    Path(id): Path<u64>,
) -> Result<String, (StatusCode, String)> {
    cache
        .get_or_set(&format!("user:{id}"), Ttl::Seconds(60), || lookup(id))
        .await
        // A cache that cannot be reached is an error here; a service could also fall back
        // to `lookup` directly.
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// The slow source of truth (a database, another service).
async fn lookup(id: u64) -> String {
    LOOKUPS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    format!("user {id}")
}

#[allow(dead_code)] // the test runs `app`, not `main`
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("NEWCACHE_URL").unwrap_or_else(|_| "newcache://127.0.0.1:11211/".to_string());
    let cache = AsyncCache::from_url(&url)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(cache)).await?;
    Ok(())
}
