//! Unix-domain-socket servers (memcached's `-s`): the facade through both URL forms, the
//! transport conformance suite over one socket server, and over a socket server and a TCP
//! server together in one cluster.

use newcache::{Cache, Ttl};
use newcache_testkit::Memcached;
use newcache_tests::ServerFixture;
use newcache_transport_text::{TextConfig, TextTransport};

/// A cache on `server` through `url_servers` (the URL's server part).
fn cache(url_servers: &str) -> Cache {
    Cache::from_url(&format!("newcache://{url_servers}/?flavor=unix"))
        .unwrap_or_else(|e| panic!("{url_servers}: {e}"))
}

fn exercise(cache: &Cache, server: &Memcached) {
    cache.set("greeting", "hello", Ttl::Seconds(60)).unwrap();
    assert_eq!(
        cache.get::<String>("greeting").unwrap().as_deref(),
        Some("hello")
    );
    cache.set("n", &5u64, Ttl::Seconds(60)).unwrap();
    assert_eq!(cache.incr("n", 3).unwrap(), 8);
    cache.set("other", "x", Ttl::Seconds(60)).unwrap();
    let many = cache
        .get_many::<_, String>(&["greeting", "other", "missing"])
        .unwrap()
        .into_complete()
        .unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(many.get("other").map(String::as_str), Some("x"));
    assert!(cache.delete("greeting").unwrap());
    assert_eq!(cache.get::<String>("greeting").unwrap(), None);
    // The items are on the server behind the socket (read past newcache).
    assert!(server.stat("curr_items") >= 2);
    assert_eq!(cache.transport().name(), "text");
}

#[test]
fn a_socket_path_url_reaches_memcached_on_its_unix_socket() {
    let server = Memcached::unix();
    let path = server.addr();
    assert!(path.starts_with('/'));
    // pylibmc's and libmemcached's form: the path itself.
    let c = cache(&path);
    assert_eq!(c.config().servers, [path]);
    exercise(&c, &server);
}

#[test]
fn the_unix_prefix_form_reaches_it_too() {
    let server = Memcached::unix();
    let path = server.addr();
    // python-memcached's, pymemcache's and Django's form.
    let c = cache(&format!("unix:{path}"));
    assert_eq!(c.config().servers, [path]);
    exercise(&c, &server);
}

/// A socket path that holds an `@`, `;` or `+`: written percent-encoded in a URL (`%40`,
/// `%3B`; a `+` as it is), given as it is to the builder. An '@' made every such path a
/// refused URL ("credentials before the host") and a refused server entry, so the server
/// could not be reached at all; a raw '@' in a URL is still taken for credentials and never
/// shown.
#[test]
fn a_socket_path_with_an_at_sign_is_written_percent_encoded() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("at@sign;dir+{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = Memcached::unix_at(dir.join("mc@1.sock"));
    let path = server.addr();
    let encoded = path.replace('@', "%40").replace(';', "%3B");
    for url_servers in [encoded.clone(), format!("unix:{encoded}")] {
        let c = cache(&url_servers);
        assert_eq!(
            c.config().servers,
            std::slice::from_ref(&path),
            "{url_servers}"
        );
        exercise(&c, &server);
    }
    let built = newcache::Builder::new()
        .servers([path.as_str()])
        .flavor("unix")
        .build()
        .unwrap();
    assert_eq!(built.get::<String>("other").unwrap().as_deref(), Some("x"));
    #[cfg(feature = "binary")]
    for transport in ["transport=libmemcached", "binary=true"] {
        let c = Cache::from_url(&format!("newcache://{encoded}/?flavor=unix&{transport}")).unwrap();
        assert_eq!(
            c.get::<String>("other").unwrap().as_deref(),
            Some("x"),
            "{transport}"
        );
    }
    let raw = Cache::from_url(&format!("newcache://{path}/")).unwrap_err();
    assert!(raw.to_string().contains("%40"), "{raw}");
    assert!(!raw.to_string().contains(&path), "{raw}");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_socket_and_a_tcp_server_share_a_ring() {
    let unix = Memcached::unix();
    let tcp = Memcached::start();
    let c = Cache::from_url(&format!(
        "newcache://{};{}/?behaviors.ketama=true",
        unix.addr(),
        tcp.addr()
    ))
    .unwrap();
    for i in 0..200 {
        c.set(&format!("k{i}"), &i, Ttl::Seconds(60)).unwrap();
    }
    for i in 0..200 {
        assert_eq!(c.get::<i32>(&format!("k{i}")).unwrap(), Some(i));
    }
    let (on_socket, on_tcp) = (unix.stat("curr_items"), tcp.stat("curr_items"));
    assert_eq!(on_socket + on_tcp, 200);
    assert!(on_socket > 0 && on_tcp > 0, "{on_socket} / {on_tcp}");
}

#[test]
fn a_missing_socket_is_a_connect_error_naming_the_path() {
    let path = std::env::temp_dir().join(format!("newcache-absent-{}.sock", std::process::id()));
    let c = cache(&path.display().to_string());
    let e = c.get::<String>("k").unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            e,
            newcache::Error::Transport(newcache_transport::Error::Connect { .. })
        ),
        "{e:?}"
    );
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn malformed_socket_entries_are_configuration_errors() {
    for url in [
        "newcache:///",
        "newcache://unix:/",
        "newcache://host:11211/extra",
        "newcache://unix:relative.sock",
    ] {
        assert!(
            matches!(Cache::from_url(url), Err(newcache::Error::Config(_))),
            "{url}"
        );
    }
}

/// A text transport over these servers (given as `Memcached::addr`: a path or host:port).
fn text(servers: Vec<String>) -> Box<dyn newcache_transport::Transport> {
    Box::new(
        TextTransport::new(TextConfig {
            servers,
            ..TextConfig::default()
        })
        .unwrap_or_else(|e| panic!("TextTransport::new failed: {e}")),
    )
}

mod conformance {
    use super::*;
    newcache_tests::conformance_suite!(|| ServerFixture::with_servers(
        vec![Memcached::unix()],
        text
    ));
}

mod conformance_mixed {
    use super::*;
    newcache_tests::conformance_suite!(|| ServerFixture::with_servers(
        vec![Memcached::unix(), Memcached::start()],
        text
    ));
}

/// Both transports place keys alike on a ring of socket servers, as pylibmc does (the
/// libmemcached transport added a socket as a host with port 11211, so ketama hashed other
/// point names: 21 of 50 keys written through the text transport read as misses through
/// it, an outside audit), and both take either form of a socket entry.
#[cfg(feature = "binary")]
#[test]
fn both_transports_find_the_same_keys_on_socket_servers() {
    let (a, b) = (Memcached::unix(), Memcached::unix());
    for behaviors in ["behaviors.ketama=true", "behaviors.ketama_weighted=true"] {
        let servers = format!("{};unix:{}", a.addr(), b.addr());
        let url =
            |transport: &str| format!("newcache://{servers}/?flavor=unix&{behaviors}&{transport}");
        let text = Cache::from_url(&url("transport=text")).unwrap();
        for i in 0..100 {
            text.set(&format!("k{i}"), &i, Ttl::Seconds(60)).unwrap();
        }
        for transport in ["transport=libmemcached", "binary=true"] {
            let lm = Cache::from_url(&url(transport)).unwrap();
            let missed: Vec<i32> = (0..100)
                .filter(|i| lm.get::<i32>(&format!("k{i}")).unwrap() != Some(*i))
                .collect();
            assert!(
                missed.is_empty(),
                "{behaviors} {transport}: missed {missed:?}"
            );
        }
        // Built from entries as given, not from the URL's normalised list.
        let built = newcache::Builder::new()
            .servers([a.addr(), format!("unix:{}", b.addr())])
            .flavor("unix")
            .behavior(
                behaviors
                    .trim_start_matches("behaviors.")
                    .trim_end_matches("=true"),
                "true",
            )
            .libmemcached(false)
            .build();
        assert!(built.is_ok(), "{:?}", built.err());
        for (i, key) in ["k1", "k2", "k3"].into_iter().enumerate() {
            assert_eq!(
                built.as_ref().unwrap().get::<i32>(key).unwrap(),
                Some(i as i32 + 1)
            );
        }
        for i in 0..100 {
            text.delete(&format!("k{i}")).unwrap();
        }
    }
}
