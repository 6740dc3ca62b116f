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

/// Stores `bytes` under the wire key `key` with `flags`, as another client would.
fn raw_set(server: &Memcached, key: &str, flags: u32, bytes: &[u8]) {
    use std::io::{Read, Write};
    let mut cmd = format!("set {key} {flags} 0 {}\r\n", bytes.len()).into_bytes();
    cmd.extend_from_slice(bytes);
    cmd.extend_from_slice(b"\r\n");
    let mut s = std::net::TcpStream::connect(server.socket_addr()).unwrap();
    s.write_all(&cmd).unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"STORED\r\n");
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
    // Stored as text (flag 16), herd-protected (bit 8, the state above bit 10) by default.
    let wire = stdout(&run(&["key", "greeting"]));
    let raw = server.raw(&format!("mg {} f\r\n", wire.trim()), b"\r\n");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let flags: u32 = raw
        .trim()
        .strip_prefix("HD f")
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("{raw}"));
    assert_eq!(flags & 0x7ff, 272, "{raw}");

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

    // delete exits 0 whether or not the key held a value.
    assert_eq!(run(&["delete", "greeting"]).status.code(), Some(0));
    assert_eq!(run(&["get", "greeting"]).status.code(), Some(1));
    assert_eq!(run(&["delete", "greeting"]).status.code(), Some(0));
    // A table per server: its name, then a row per statistic.
    let stats = stdout(&run(&["stats"]));
    assert_eq!(
        stats.lines().next(),
        Some(server.addr().to_string().as_str()),
        "{stats}"
    );
    let items = stats
        .lines()
        .find(|l| l.trim_start().starts_with("curr_items "))
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(
        items.starts_with("  ") && items.trim().ends_with(" 2"),
        "{items}"
    );
    assert_eq!(run(&["flush"]).status.code(), Some(0));
    assert_eq!(run(&["get", "fresh"]).status.code(), Some(1));
    // A missing counter and a negative delta: the advice is the commands' (it named the
    // library's add and incr_version, and told to write `-- -5`, which failed as a delta).
    let o = run(&["incr", "nothing"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("newcache set KEY 0 --no-herd") && !err.contains("incr_version"),
        "{err}"
    );
    let o = run(&["incr", "nothing", "-5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("decr subtracts") && !err.contains("-- -5"),
        "{err}"
    );
    // `stats` sends no meta probe, which memcached counts as a get and a miss: running it
    // moved the very counters it showed.
    let before = (server.stat("cmd_get"), server.stat("get_misses"));
    for _ in 0..3 {
        assert_eq!(run(&["stats"]).status.code(), Some(0));
    }
    assert_eq!((server.stat("cmd_get"), server.stat("get_misses")), before);
    // Over libmemcached, which takes no protocol setting, they run as they did.
    #[cfg(feature = "binary")]
    for transport in ["transport=libmemcached", "binary=true"] {
        let lm = format!("newcache://{}/?{transport}", server.addr());
        for command in ["stats", "flush"] {
            let o = cli(Some(&lm), None, &[command]);
            assert_eq!(o.status.code(), Some(0), "{transport} {command}: {o:?}");
        }
    }
    // With a server down, the one that answered is flushed, and the error says so.
    assert_eq!(run(&["set", "again", "v"]).status.code(), Some(0));
    let both = format!("newcache://{};127.0.0.1:1/", server.addr());
    let o = cli(Some(&both), None, &["flush"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("127.0.0.1:1") && err.contains("the servers that answered were flushed"),
        "{err}"
    );
    assert_eq!(run(&["get", "again"]).status.code(), Some(1));
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
        &["get", "k", "--no-herd"],
        &["delete", "k", "--ttl", "5"],
        &["incr", "k", "--ttl", "forever"],
        // A zero TTL would store nothing (set deleted the key, add stored nothing, exit 0).
        &["set", "k", "v", "--ttl", "0"],
        &["add", "k", "v", "--ttl", "00"],
    ] {
        let o = cli(Some("newcache://127.0.0.1:1/"), None, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!o.stderr.is_empty());
        if args.contains(&"v") {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("forever") && err.contains("delete"), "{err}");
        }
    }
    let options = cli(
        Some("newcache://127.0.0.1:1/"),
        None,
        &["key", "k", "--no-herd"],
    );
    assert_eq!(options.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&options.stderr).contains("--no-herd"));
    {
        use std::os::unix::ffi::OsStrExt;
        let o = Command::new(env!("CARGO_BIN_EXE_newcache"))
            .arg("key")
            .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
            .output()
            .expect("runs the newcache binary");
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("UTF-8"));
        // A NEWCACHE_URL that is not UTF-8 was taken as unset: the default URL was used.
        let o = Command::new(env!("CARGO_BIN_EXE_newcache"))
            .env(
                "NEWCACHE_URL",
                std::ffi::OsStr::from_bytes(b"newcache://127.0.0.1:1/?flavor=prod\xe9"),
            )
            .args(["key", "games"])
            .output()
            .expect("runs the newcache binary");
        assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("NEWCACHE_URL is not valid UTF-8"));
    }
    // A TTL past 2038 is refused before anything is sent, with the CLI's own spelling of
    // the fix.
    let too_long = cli(
        Some("newcache://127.0.0.1:1/"),
        None,
        &["set", "k", "v", "--ttl", "99999999999"],
    );
    assert_eq!(too_long.status.code(), Some(2));
    let err = String::from_utf8_lossy(&too_long.stderr);
    assert!(
        err.contains("--ttl forever") && !err.contains("Ttl::"),
        "{err}"
    );
    let bad_url = cli(Some("newcache://h/?nope=1"), None, &["key", "k"]);
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_url.stderr).contains("nope"));
}

#[test]
fn get_only_looks_a_stale_value_is_printed_and_its_refresh_is_left_to_the_service() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?flavor=peek", server.addr());
    let run = |args: &[&str]| cli(Some(&url), None, args);
    assert_eq!(
        run(&["set", "report", "old", "--ttl", "1"]).status.code(),
        Some(0)
    );
    let wire = stdout(&run(&["key", "report"])).trim().to_string();
    let before = server.raw(&format!("mg {wire} f c\r\n"), b"\r\n");
    // The soft expiry is kept to the whole second, rounded up: a 1 s TTL is stale within 2 s.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    // Past its soft expiry: the operator still sees what the other readers are served...
    for _ in 0..2 {
        let o = run(&["get", "report"]);
        assert_eq!((o.status.code(), stdout(&o)), (Some(0), "old\n".into()));
    }
    // ...and the item on the server is exactly as it was: no claim, no re-store.
    assert_eq!(
        server.raw(&format!("mg {wire} f c\r\n"), b"\r\n"),
        before,
        "the CLI's get changed the item"
    );
    // So the service's first reader still wins the refresh (a miss), the next is served.
    let cache = newcache::Cache::from_url(&url).unwrap();
    assert_eq!(cache.get::<String>("report").unwrap(), None);
    assert_eq!(
        cache.get::<String>("report").unwrap().as_deref(),
        Some("old")
    );
}

#[test]
fn help_before_a_command_or_long_after_it_and_double_dash_ends_the_options() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?flavor=dash", server.addr());
    let run = |args: &[&str]| cli(Some(&url), None, args);
    for help in [&["-h"][..], &["--help"], &["help"]] {
        let o = run(help);
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout(&o).contains("Usage: newcache"), "{}", stdout(&o));
        assert!(stdout(&o).contains("completions"), "{}", stdout(&o));
    }
    // One command's help.
    let o = run(&["help", "set"]);
    assert!(stdout(&o).contains("--no-herd"), "{}", stdout(&o));
    // After `--`, `--help` is a key; after the command, `-h` is a value.
    assert_eq!(run(&["set", "--", "--help", "v"]).status.code(), Some(0));
    let o = run(&["get", "--", "--help"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "v\n".into()));
    assert_eq!(run(&["set", "flag", "-h"]).status.code(), Some(0));
    let o = run(&["get", "flag"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "-h\n".into()));
    // `--help` after a command is that command's help, and touches no key: `delete
    // --help` deleted the key `--help` (an outside audit).
    for command in ["delete", "get", "set", "incr", "key", "flush", "stats"] {
        let o = run(&[command, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{command}");
        let usage = format!("Usage: newcache {command}");
        assert!(stdout(&o).contains(&usage), "{command}: {}", stdout(&o));
    }
    let o = run(&["get", "--", "--help"]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "v\n".into()),
        "still there"
    );
}

#[test]
fn version_and_shell_completions() {
    let o = cli(None, None, &["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        format!("newcache {}\n", env!("CARGO_PKG_VERSION"))
    );
    for shell in ["bash", "zsh", "fish"] {
        let o = cli(None, None, &["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let script = stdout(&o);
        assert!(
            script.contains("newcache") && script.contains("incr"),
            "{shell}: {script}"
        );
    }
    assert_eq!(
        cli(None, None, &["completions", "cmd.exe"]).status.code(),
        Some(2)
    );
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let server = Memcached::start();
    let url = format!("newcache://{}/", server.addr());
    for args in [&["stats"][..], &["key", "k"], &["--help"]] {
        // A socket pair whose other end is closed: every write to stdout fails (EPIPE).
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(ours);
        let o = Command::new(env!("CARGO_BIN_EXE_newcache"))
            .args(["--url", &url])
            .args(args)
            .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(
                theirs,
            )))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "",
            "{args:?}: quiet, no panic"
        );
    }
}

#[test]
fn a_failed_write_of_help_or_version_is_an_error() {
    // An outside audit: `--help > /dev/full` exited 0 with nothing written (clap ignored the
    // failed write), where `get` and `stats` report it. A closed stdout stays quiet (above).
    for args in [&["--help"][..], &["--version"], &["get", "--help"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let o = Command::new(env!("CARGO_BIN_EXE_newcache"))
            .args(args)
            .stdout(full)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains("cannot write to stdout"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn get_prints_what_python_pickled_or_compressed_decoded() {
    let server = Memcached::start();
    let url = format!(
        "newcache://{}/?key_function=django&key_prefix=py",
        server.addr()
    );
    // What pylibmc stores for {'a': [1, 2]} (a pickle, flag 1) and for a long str with
    // min_compress_len (zlib, flag 16|8).
    let wire = |k: &str| format!("py:1:{k}");
    let set = |key: &str, flags: u32, bytes: &[u8]| raw_set(&server, key, flags, bytes);
    set(
        &wire("dict"),
        1,
        b"\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94]\x94(K\x01K\x02es.",
    );
    let text = "hello ".repeat(100);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, text.as_bytes()).unwrap();
    set(&wire("zipped"), 16 | 8, &z.finish().unwrap());
    let run = |args: &[&str]| cli(Some(&url), None, args);
    let o = run(&["get", "dict"]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "{'a': [1, 2]}\n".into())
    );
    // As Python shows it: a tuple is a tuple, bytes are b'...' (pickle.dumps((1, b'x'), 5)).
    set(
        &wire("tuple"),
        1,
        b"\x80\x05\x95\x09\x00\x00\x00\x00\x00\x00\x00K\x01C\x01x\x94\x86\x94.",
    );
    let o = run(&["get", "tuple"]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "(1, b'x')\n".into())
    );
    let o = run(&["get", "zipped"]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), format!("{text}\n"))
    );
    // Binary bytes print as Python shows bytes; `--raw` writes them as stored.
    let binary = b"\x00\xff\r\nbytes\x80";
    set(&wire("bin"), 0, binary);
    let o = run(&["get", "bin"]);
    assert_eq!(stdout(&o), "b'\\x00\\xff\\r\\nbytes\\x80'\n");
    let o = run(&["get", "--raw", "bin"]);
    assert_eq!(
        (o.status.code(), o.stdout.as_slice()),
        (Some(0), &binary[..])
    );
    let o = run(&["get", "--raw", "dict"]);
    assert!(o.stdout.starts_with(b"\x80\x05"), "the pickle as stored");
}

/// An outside audit: `get` printed a description of what it could not read on stdout and
/// exited 0 (a script took it for the value), showed text that is not UTF-8 lossily, sent a
/// value's escape sequences to the terminal, failed on flags `16 | 256` that Python's
/// clients read as text, and panicked (exit 101) when stderr could not be written.
#[test]
fn get_fails_on_what_no_reader_takes_and_shows_the_rest_safely() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?key_function=django", server.addr());
    let run = |args: &[&str]| cli(Some(&url), None, args);
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    // pickle.dumps(datetime.date(2024, 1, 2), 5): no serde form.
    let date = b"\x80\x05\x95\x20\x00\x00\x00\x00\x00\x00\x00\x8c\x08datetime\x94\x8c\x04date\x94\x93\x94C\x04\x07\xe8\x01\x02\x94\x85\x94R\x94.";
    for (key, flags, bytes, why) in [
        ("latin", 16, &b"ab\xffcd"[..], "not UTF-8"),
        ("number", 4, b"abc", "no integer"),
        ("date", 1, date, "datetime.date"),
        ("bomb", 16 | 8, b"\x78\x9c\x01\x02", "do not inflate"),
        ("odd", 1 | 4, b"x", "no codec knows"),
    ] {
        raw_set(&server, &format!(":1:{key}"), flags, bytes);
        let o = run(&["get", key]);
        assert_eq!(
            (o.status.code(), stdout(&o)),
            (Some(2), String::new()),
            "{key}"
        );
        assert!(stderr(&o).contains(why), "{key}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--raw") && !stderr(&o).contains("get_raw"),
            "{key}: says how to get the bytes, with the command, once: {}",
            stderr(&o)
        );
        let o = run(&["get", "--raw", key]);
        assert_eq!(
            (o.status.code(), o.stdout.as_slice()),
            (Some(0), bytes),
            "{key}"
        );
    }
    raw_set(&server, ":1:esc", 16, b"red\x1b[31mX\x07\nnext\tline");
    let o = run(&["get", "esc"]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "red\\x1b[31mX\\x07\nnext\tline\n".into())
    );
    // Another application's bits beside the text flag: the text, as pylibmc reads it.
    raw_set(&server, ":1:h4096", 16 | 4096, b"hello");
    let o = run(&["get", "h4096"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "hello\n".into()));
    raw_set(&server, ":1:h256", 16 | 256, b"hello");
    let o = run(&["get", "h256"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "hello\n".into()));
    let o = run(&["get", "--raw", "h256"]);
    assert_eq!(
        (o.status.code(), o.stdout.as_slice()),
        (Some(0), &b"hello"[..])
    );
    // Under herd=meta too, and looking takes no refresh token (the fallback read did, and
    // its first `get` said miss: another audit).
    let meta = format!(
        "newcache://{}/?key_function=django&herd=meta",
        server.addr()
    );
    for _ in 0..2 {
        let o = cli(Some(&meta), None, &["get", "h256"]);
        assert_eq!((o.status.code(), stdout(&o)), (Some(0), "hello\n".into()));
    }
    // A counter `decr` shortened: memcached pads it with spaces, every client reads 9.
    raw_set(&server, ":1:ctr", 4, b"10");
    let o = run(&["decr", "ctr"]);
    assert_eq!(stdout(&o), "9\n");
    let o = run(&["get", "ctr"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "9\n".into()));
    // A stderr that cannot be written: exit 2 all the same, no panic.
    for args in [&["get", "latin"][..], &["bogus"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let o = Command::new(env!("CARGO_BIN_EXE_newcache"))
            .args(["--url", &url])
            .args(args)
            .stderr(full)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn stats_with_a_server_down_shows_the_others_and_fails() {
    // An outside audit: with one server of two down, `stats` printed the failure in that
    // server's table and exited 0, so a health check read a partial answer as a whole one.
    let server = Memcached::start();
    let url = format!("newcache://{},127.0.0.1:1/", server.addr());
    let o = cli(Some(&url), None, &["stats"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.starts_with(&format!("{}\n", server.addr())), "{out}");
    assert!(out.contains("\n127.0.0.1:1\n  failed: "), "{out}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("1 of 2 servers did not answer"), "{stderr}");
    // All up: exit 0, nothing on stderr.
    let o = cli(
        Some(&format!("newcache://{}/", server.addr())),
        None,
        &["stats"],
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
}

/// `newcache` with `input` on its stdin.
fn cli_stdin(url: &str, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_newcache"))
        .args(["--url", url])
        .args(args)
        .env_remove("NEWCACHE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs the newcache binary");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// An outside audit: `set` took its value from the command line only, so a value past the
/// system's argument limit (200 KB: `Argument list too long`), bytes that are not text, or
/// a file could not be stored. `--stdin` reads the value, `--bytes` stores it as bytes
/// (Python reads `bytes`, where text is `str`), and bytes that are not UTF-8 need it.
#[test]
fn set_and_add_read_a_value_of_any_size_and_bytes_from_stdin() {
    let server = Memcached::start();
    let url = format!("newcache://{}/?key_function=django", server.addr());
    let text = "line\n".repeat(60_000);
    let o = cli_stdin(&url, &["set", "big", "--stdin"], text.as_bytes());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = cli(Some(&url), None, &["get", "--raw", "big"]);
    assert_eq!(o.stdout, text.as_bytes());
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let o = cli_stdin(&url, &["set", "bin", "--stdin"], &bytes);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--bytes"), "{err}");
    let o = cli_stdin(&url, &["add", "bin", "--stdin", "--bytes"], &bytes);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = cli(Some(&url), None, &["get", "--raw", "bin"]);
    assert_eq!(o.stdout, bytes);
    // Python's clients read text as `str` and bytes as `bytes`.
    let script = format!(
        "import pylibmc; c = pylibmc.Client(['{}']); \
         print(type(c.get(':1:big')).__name__, type(c.get(':1:bin')).__name__, len(c.get(':1:bin')))",
        server.addr()
    );
    assert_eq!(newcache_testkit::python(&script), "str bytes 200000\n");
    // A value and --stdin together, or neither, is a usage error.
    for args in [&["set", "k", "v", "--stdin"][..], &["set", "k"]] {
        assert_eq!(
            cli(Some(&url), None, args).status.code(),
            Some(2),
            "{args:?}"
        );
    }
}
