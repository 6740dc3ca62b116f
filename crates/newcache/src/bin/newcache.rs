//! `newcache`: look at and change what a Rust service cached.
//!
//! ```text
//! newcache [--url URL] key KEY              print the wire key (no server needed)
//! newcache [--url URL] get KEY              print the value; exit 1 on a miss
//! newcache [--url URL] set KEY VALUE [--ttl SECS|forever] [--no-herd]
//! newcache [--url URL] add KEY VALUE [--ttl SECS|forever] [--no-herd]   exit 1 when not stored
//! newcache [--url URL] delete KEY
//! newcache [--url URL] incr KEY [DELTA]     print the new value
//! newcache [--url URL] decr KEY [DELTA]     print the new value
//! newcache [--url URL] flush
//! newcache [--url URL] stats
//! ```
//!
//! The URL comes from `--url`, else `$NEWCACHE_URL`, else `newcache://127.0.0.1:11211/`.
//! Values on the command line are stored as text (flag 16). Errors go to stderr, exit 2.
//! `-h`/`--help` asks for help where a command is expected; after the command it is a word
//! like any other, and `--` ends the options (`newcache set -- --help v` stores the key
//! `--help`). `get` prints what Python stored too: pickles as Python writes them, compressed
//! values inflated. A closed stdout (`newcache stats | head -1`) ends the command quietly.
//!
//! `get` only looks: it prints a value past its soft expiry too (it is what the service's
//! other readers are being served) and never starts the herd's refresh, so an operator's
//! look changes nothing. `delete` exits 0 whether or not the key held a value.

use std::io::Write;
use std::process::ExitCode;

use newcache::{Cache, SetOptions, Ttl};

const USAGE: &str = "usage: newcache [--url URL] <command>
commands:
  key KEY                                   print the wire key (no server needed)
  get KEY                                   print the value; exit 1 on a miss
  set KEY VALUE [--ttl SECS|forever] [--no-herd]
  add KEY VALUE [--ttl SECS|forever] [--no-herd]   exit 1 when not stored
  delete KEY
  incr KEY [DELTA]                          print the new value
  decr KEY [DELTA]                          print the new value
  flush                                     invalidate every item
  stats                                     print every server's statistics
The URL comes from --url, else $NEWCACHE_URL, else newcache://127.0.0.1:11211/";

const DEFAULT_URL: &str = "newcache://127.0.0.1:11211/";

struct Args {
    url: Option<String>,
    ttl: Option<Ttl>,
    no_herd: bool,
    help: bool,
    words: Vec<String>,
}

/// The error a write to a closed stdout becomes: the command ends quietly.
const CLOSED_STDOUT: &str = "stdout is closed";

/// The arguments as UTF-8, or an error naming the one that is not.
fn utf8_args(raw: impl Iterator<Item = std::ffi::OsString>) -> Result<Vec<String>, String> {
    raw.map(|a| {
        a.into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))
    })
    .collect()
}

fn parse_args(raw: Vec<String>) -> Result<Args, String> {
    let mut args = Args {
        url: None,
        ttl: None,
        no_herd: false,
        help: false,
        words: Vec::new(),
    };
    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--url" => args.url = Some(it.next().ok_or("--url needs a value")?),
            "--ttl" => {
                let v = it
                    .next()
                    .ok_or("--ttl needs a value (seconds or forever)")?;
                args.ttl =
                    Some(match v.as_str() {
                        "forever" => Ttl::Forever,
                        s => Ttl::Seconds(s.parse().map_err(|_| {
                            format!("--ttl {s:?}: use a number of seconds or forever")
                        })?),
                    });
            }
            "--no-herd" => args.no_herd = true,
            "--" => args.words.extend(it.by_ref()),
            // Help where a command is expected; later, a word like any other.
            "-h" | "--help" if args.words.is_empty() => args.help = true,
            "-h" | "--help" => args.words.push(arg),
            s if s.starts_with("--url=") => args.url = Some(s["--url=".len()..].to_string()),
            s if s.starts_with("--") && s.len() > 2 => return Err(format!("unknown option {s}")),
            _ => args.words.push(arg),
        }
    }
    Ok(args)
}

/// A failed write to stdout: closed (the reader went away) ends quietly.
fn write_error(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe => CLOSED_STDOUT.to_string(),
        _ if e.raw_os_error() == Some(9) => CLOSED_STDOUT.to_string(), // EBADF: no stdout at all
        _ => format!("cannot write to stdout: {e}"),
    }
}

enum Outcome {
    Ok,
    No,
}

fn run(args: Args) -> Result<Outcome, String> {
    let url = args
        .url
        .or_else(|| std::env::var("NEWCACHE_URL").ok())
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let cache = Cache::from_url(&url).map_err(|e| e.to_string())?;
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    if (args.ttl.is_some() || args.no_herd) && !matches!(words.first(), Some(&"set" | &"add")) {
        return Err("bad arguments: --ttl and --no-herd go with set and add".into());
    }
    let mut options = SetOptions::new(args.ttl.unwrap_or(Ttl::Default));
    if args.no_herd {
        options = options.no_herd();
    }
    let mut out = std::io::stdout().lock();
    let mut say = |line: &str| writeln!(out, "{line}").map_err(write_error);
    let delta = |d: Option<&&str>| -> Result<u64, String> {
        d.map_or(Ok(1), |d| {
            d.parse()
                .map_err(|_| format!("DELTA {d:?} is not a non-negative integer"))
        })
    };
    let e = |e: newcache::Error| e.to_string();
    match words.as_slice() {
        ["key", key] => {
            let wire = cache.wire_key(key).map_err(e)?;
            say(&String::from_utf8_lossy(&wire))?;
        }
        ["get", key] => match cache.peek(key).map_err(e)? {
            Some(peeked) => say(&peeked.value.display())?,
            None => return Ok(Outcome::No),
        },
        ["set", key, value] => cache.set(key, *value, options).map_err(e)?,
        ["add", key, value] => {
            if !cache.add(key, *value, options).map_err(e)? {
                return Ok(Outcome::No);
            }
        }
        ["delete", key] => {
            cache.delete(key).map_err(e)?;
        }
        ["incr", key, rest @ ..] if rest.len() <= 1 => say(&cache
            .incr(key, delta(rest.first())?)
            .map_err(e)?
            .to_string())?,
        ["decr", key, rest @ ..] if rest.len() <= 1 => say(&cache
            .decr(key, delta(rest.first())?)
            .map_err(e)?
            .to_string())?,
        ["flush"] => cache.clear().map_err(e)?,
        ["stats"] => {
            for server in cache.stats().map_err(e)? {
                for (name, value) in &server.stats {
                    say(&format!("{} {name} {value}", server.server))?;
                }
            }
        }
        ["help"] => say(USAGE)?,
        [] => return Err("no command given".into()),
        [cmd, ..] => return Err(format!("bad arguments for {cmd:?}")),
    }
    Ok(Outcome::Ok)
}

fn main() -> ExitCode {
    let raw = match utf8_args(std::env::args_os().skip(1)) {
        Ok(raw) => raw,
        Err(msg) => {
            eprintln!("newcache: {msg}");
            return ExitCode::from(2);
        }
    };
    let outcome = parse_args(raw).and_then(|args| {
        if args.help {
            writeln!(std::io::stdout(), "{USAGE}").map_err(write_error)?;
            return Ok(Outcome::Ok);
        }
        run(args)
    });
    match outcome {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::No) => ExitCode::from(1),
        Err(msg) if msg == CLOSED_STDOUT => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("newcache: {msg}");
            if !msg.contains('\n')
                && (msg.starts_with("bad arguments")
                    || msg.starts_with("no command")
                    || msg.starts_with("unknown option"))
            {
                eprintln!("{USAGE}");
            }
            ExitCode::from(2)
        }
    }
}
