//! `self_connect PORT blocking|async [PARAMS]`: 20 gets through a blocking `Cache` or an
//! `AsyncCache` on `127.0.0.1:PORT`, where nothing listens (`PARAMS` added to its URL's
//! query, e.g. `binary=true`), printing one line per call: `ok`, or the
//! error's kind (with a connect error's `io::ErrorKind`) and message. Run by `tests/tests/cluster_failover.rs` in a network namespace
//! of its own whose ephemeral port range is PORT alone, so that every connect the system
//! makes to that port reaches itself (TCP's simultaneous open).

use newcache::{AsyncCache, Cache, Error};

fn line(got: Result<Option<String>, Error>) -> String {
    match got {
        Ok(_) => "ok".to_string(),
        Err(Error::Transport(e)) => {
            let debug = format!("{e:?}");
            let kind = debug
                .split([' ', '{', '('])
                .next()
                .unwrap_or_default()
                .to_string();
            let source = match &e {
                newcache_transport::Error::Connect { source, .. } => format!("{:?}", source.kind()),
                _ => String::new(),
            };
            format!("{kind} {source} {e}")
        }
        Err(e) => format!("other {e}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(port), Some(mode)) = (
        args.first().and_then(|p| p.parse::<u16>().ok()),
        args.get(1),
    ) else {
        eprintln!("usage: self_connect PORT blocking|async");
        std::process::exit(2);
    };
    let mut url = format!("newcache://127.0.0.1:{port}/?connect_timeout=200&read_timeout=200");
    if let Some(params) = args.get(2) {
        url = format!("{url}&{params}");
    }
    if mode == "blocking" {
        let cache = Cache::from_url(&url).expect("cache");
        for _ in 0..20 {
            println!("{}", line(cache.get::<String>("k")));
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = rt
        .block_on(async { AsyncCache::from_url(&url) })
        .expect("async cache");
    for _ in 0..20 {
        println!("{}", line(rt.block_on(cache.get::<String>("k"))));
    }
}
