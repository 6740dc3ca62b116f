//! The `newcache` command line, against a real memcached: the interface other tools script.
#![cfg(feature = "cli")]

use std::process::{Command, Output};

use newcache_testkit::Memcached;

fn cli(url: Option<&str>, env_url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_newcache"));
    if let Some(url) = url {
        cmd.args(["--url", url]);
    }
    cmd.env_remove("NEWCACHE_URL");
    if let Some(u) = env_url {
        cmd.env("NEWCACHE_URL", u);
    }
    cmd.args(args).output().expect("runs the newcache binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn key_prints_the_wire_key_without_a_server() {
    let o = cli(
        Some("newcache://127.0.0.1:1/?flavor=test"),
        None,
        &["key", "games"],
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "test-1-dd27204535de317c6202952eeb2043fad52e3fec\n"
    );
    let o = cli(
        None,
        Some("newcache://127.0.0.1:1/?key_function=django&key_prefix=site"),
        &["key", "games"],
    );
    assert_eq!(stdout(&o), "site:1:games\n");
    let o = cli(None, None, &["key", "games"]);
    assert_eq!(stdout(&o), "-1-dd27204535de317c6202952eeb2043fad52e3fec\n");
}

#[test]
fn get_set_add_delete_incr_decr_flush_and_stats() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?flavor=cli", server.addr());
    let run = |args: &[&str]| cli(Some(&url), None, args);

    let miss = run(&["get", "greeting"]);
    assert_eq!(
        (miss.status.code(), stdout(&miss)),
        (Some(1), String::new())
    );
    assert_eq!(
        run(&["set", "greeting", "héllo wörld"]).status.code(),
        Some(0)
    );
    let hit = run(&["get", "greeting"]);
    assert_eq!(
        (hit.status.code(), stdout(&hit)),
        (Some(0), "héllo wörld\n".into())
    );
    // Stored as text (flag 16), enveloped (bit 8) by default.
    let wire = stdout(&run(&["key", "greeting"]));
    let raw = server.raw(&format!("mg {} f\r\n", wire.trim()), b"\r\n");
    assert_eq!(raw, b"HD f272\r\n", "{}", String::from_utf8_lossy(&raw));

    assert_eq!(run(&["add", "greeting", "other"]).status.code(), Some(1));
    assert_eq!(
        run(&["add", "fresh", "x", "--ttl", "forever"])
            .status
            .code(),
        Some(0)
    );
    let raw = server.raw(
        &format!("mg {} f t\r\n", stdout(&run(&["key", "fresh"])).trim()),
        b"\r\n",
    );
    assert_eq!(raw, b"HD f16 t-1\r\n", "{}", String::from_utf8_lossy(&raw));

    assert_eq!(
        run(&["set", "n", "10", "--ttl", "60", "--no-herd"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(stdout(&run(&["incr", "n"])), "11\n");
    assert_eq!(stdout(&run(&["incr", "n", "5"])), "16\n");
    assert_eq!(stdout(&run(&["decr", "n", "20"])), "0\n");
    let missing = run(&["incr", "nothing"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nothing"));

    assert_eq!(run(&["delete", "greeting"]).status.code(), Some(0));
    assert_eq!(run(&["delete", "greeting"]).status.code(), Some(1));
    let stats = stdout(&run(&["stats"]));
    assert!(
        stats.contains(&format!("{} curr_items ", server.addr())),
        "{stats}"
    );
    assert_eq!(run(&["flush"]).status.code(), Some(0));
    assert_eq!(run(&["get", "fresh"]).status.code(), Some(1));
}

#[test]
fn errors_go_to_stderr_with_status_2() {
    let down = cli(Some("newcache://127.0.0.1:1/"), None, &["get", "k"]);
    assert_eq!(down.status.code(), Some(2));
    assert!(stdout(&down).is_empty());
    assert!(String::from_utf8_lossy(&down.stderr).contains("127.0.0.1:1"));
    for args in [
        &["frobnicate"][..],
        &["get"],
        &["set", "k"],
        &["incr", "k", "x"],
        &["get", "k", "--ttl", "soon"],
    ] {
        let o = cli(Some("newcache://127.0.0.1:1/"), None, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!o.stderr.is_empty());
    }
    let bad_url = cli(Some("newcache://h/?nope=1"), None, &["key", "k"]);
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_url.stderr).contains("nope"));
}
