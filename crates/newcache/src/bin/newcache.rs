//! `newcache`: look at and change what a Rust service cached.
//!
//! ```text
//! newcache [--url URL] key KEY              print the wire key (no server needed)
//! newcache [--url URL] get [--raw] KEY      print the value (--raw: its bytes as stored); exit 1 on a miss,
//!                                           2 when it is no value a reader takes
//! newcache [--url URL] set KEY VALUE|--stdin [--bytes] [--ttl SECS|forever] [--no-herd]
//! newcache [--url URL] add KEY VALUE|--stdin [--bytes] [--ttl SECS|forever] [--no-herd]   exit 1 when not stored
//! newcache [--url URL] delete KEY
//! newcache [--url URL] incr KEY [DELTA]     print the new value
//! newcache [--url URL] decr KEY [DELTA]     print the new value
//! newcache [--url URL] flush
//! newcache [--url URL] stats                a table per server; exit 2 when one did not answer
//! newcache completions SHELL                a completion script for bash, zsh, fish...
//! ```
//!
//! The URL comes from `--url`, else `$NEWCACHE_URL`, else `newcache://127.0.0.1:11211/`.
//! Values are stored as text (flag 16, Python's `str`), or with `--bytes` as bytes (flag 0);
//! `--stdin` reads the value from stdin (any size, where the command line has a limit). Usage errors and failures go to
//! stderr with exit status 2. `-h`/`--help` asks for help before the command, `--help` (or
//! `newcache help set`) after it; after a command that takes a key, `-h` is a word like any
//! other, and `--` ends the options (`newcache set -- --help v` stores the key `--help`). `get` prints what Python
//! stored too: pickles as Python writes them, compressed values inflated, text with its control
//! characters escaped; a value no reader takes (text that is not UTF-8, a pickle of a class,
//! flags no codec knows) is an error that says what it is (`--raw` writes any). A closed stdout
//! (`newcache stats | head -1`) ends the command quietly.
//!
//! `get` only looks: it prints a value past its soft expiry too (it is what the service's
//! other readers are being served) and never starts the herd's refresh, so an operator's
//! look changes nothing. `delete` exits 0 whether or not the key held a value.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use newcache::{Builder, Config, Policy, SetOptions, TransportKind, Ttl, WireProtocol};

const DEFAULT_URL: &str = "newcache://127.0.0.1:11211/";

/// Look at and change what a service cached in memcached, through newcache's key function
/// and value format.
#[derive(Debug, Parser)]
#[command(name = "newcache", version, max_term_width = 100)]
struct Cli {
    /// The cache's URL [default: $NEWCACHE_URL, else newcache://127.0.0.1:11211/]
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// The TTL of `set` and `add`.
#[derive(Debug, Clone, Copy)]
struct TtlArg(Ttl);

/// `--ttl`: seconds from 1, or `forever`. Not 0: the library's zero TTL (Django's
/// `timeout=0`) expires at once, so `set --ttl 0` deleted the key and `add --ttl 0` stored
/// nothing, both exiting 0; in memcached's own commands 0 means no expiry. Either reading
/// surprises someone, so the CLI asks which (an outside audit).
fn parse_ttl(s: &str) -> Result<TtlArg, String> {
    match s {
        "forever" => Ok(TtlArg(Ttl::Forever)),
        s => match s.parse() {
            Ok(0) => Err("0 would store nothing (a zero TTL expires at once, as Django's timeout=0); for no expiry use forever, to remove a key use delete".to_string()),
            Ok(secs) => Ok(TtlArg(Ttl::Seconds(secs))),
            Err(_) => Err("use a number of seconds (from 1) or forever".to_string()),
        },
    }
}

/// What `set` and `add` store.
#[derive(Debug, clap::Args)]
struct Store {
    /// Print help (`--help` only: after the command `-h` is a word, a key or a value)
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The key, as the service names it
    #[arg(allow_hyphen_values = true)]
    key: String,
    /// The value, stored as text (Python reads a `str`)
    #[arg(
        allow_hyphen_values = true,
        required_unless_present = "stdin",
        conflicts_with = "stdin"
    )]
    value: Option<String>,
    /// Read the value from stdin instead (any size, any bytes, as read: a trailing newline
    /// too, so `printf 5`, not `echo 5`, for a counter)
    #[arg(long)]
    stdin: bool,
    /// Store the value as bytes (Python reads `bytes`), not as text
    #[arg(long)]
    bytes: bool,
    /// Seconds, or `forever` [default: the URL's `timeout`, 300 s unless set]
    #[arg(long, value_parser = parse_ttl, value_name = "SECS|forever")]
    ttl: Option<TtlArg>,
    /// Store bare: no soft expiry (counters must be)
    #[arg(long)]
    no_herd: bool,
}

/// A value to store: text (flag 16, Python's `str`) or bytes (flag 0, `bytes`).
enum Value {
    Text(String),
    Bytes(Vec<u8>),
}

impl Store {
    /// The value given, or read from stdin; text unless `--bytes`, and then it must be
    /// UTF-8.
    fn value(&self) -> Result<Value, String> {
        let given = match &self.value {
            Some(text) => text.clone().into_bytes(),
            None => {
                let mut read = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut read)
                    .map_err(|e| format!("reading the value from stdin: {e}"))?;
                read
            }
        };
        if self.bytes {
            return Ok(Value::Bytes(given));
        }
        String::from_utf8(given).map(Value::Text).map_err(|e| {
            format!(
                "the value is not UTF-8 text (from its byte at offset {} on); add --bytes to store it as bytes",
                e.utf8_error().valid_up_to()
            )
        })
    }

    fn options(&self) -> SetOptions {
        let options = SetOptions::new(self.ttl.map_or(Ttl::Default, |t| t.0));
        if self.no_herd {
            options.no_herd()
        } else {
            options
        }
    }
}

/// A key.
#[derive(Debug, clap::Args)]
struct Key {
    /// Print help (`--help` only: after the command `-h` is a word, a key or a value)
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The key, as the service names it
    #[arg(allow_hyphen_values = true)]
    key: String,
}

/// What `get` prints.
#[derive(Debug, clap::Args)]
struct Get {
    /// Print help (`--help` only: after the command `-h` is a word, a key or a value)
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Write the value's bytes as stored (compressed ones too), with no newline, instead of
    /// the value for people
    #[arg(long)]
    raw: bool,
    /// The key, as the service names it
    #[arg(allow_hyphen_values = true)]
    key: String,
}

/// A key and how much to add or subtract.
#[derive(Debug, clap::Args)]
struct Counter {
    /// Print help (`--help` only: after the command `-h` is a word, a key or a value)
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The key, as the service names it
    #[arg(allow_hyphen_values = true)]
    key: String,
    /// How much (default 1; 0 or more: `decr` subtracts)
    #[arg(default_value_t = 1, allow_negative_numbers = true, value_parser = parse_delta)]
    delta: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the wire key KEY becomes (no server needed)
    #[command(disable_help_flag = true)]
    Key(Key),
    /// Print the value (herd state read, nothing changed); exit 1 on a miss, 2 when it is no
    /// value a reader takes (--raw writes any)
    #[command(disable_help_flag = true)]
    Get(Get),
    /// Store a value
    #[command(disable_help_flag = true)]
    Set(Store),
    /// Store a value unless the key holds one; exit 1 when not stored
    #[command(disable_help_flag = true)]
    Add(Store),
    /// Delete a value
    #[command(disable_help_flag = true)]
    Delete(Key),
    /// Add to a counter; print the new value
    #[command(disable_help_flag = true)]
    Incr(Counter),
    /// Subtract from a counter (stopping at 0); print the new value
    #[command(disable_help_flag = true)]
    Decr(Counter),
    /// Invalidate every item on every server
    Flush,
    /// Every server's statistics, a table per server; exit 2 when one did not answer
    Stats,
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// The error a write to a closed stdout becomes: the command ends quietly.
const CLOSED_STDOUT: &str = "stdout is closed";

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

/// Every statistic of one server as a table: a header naming the server, then one row per
/// statistic, names aligned.
fn stats_table(server: &newcache::transport::ServerStats) -> String {
    let width = server.stats.keys().map(String::len).max().unwrap_or(0);
    let mut table = format!("{}\n", server.server);
    if let Some(failure) = &server.failure {
        table.push_str(&format!("  failed: {failure}\n"));
    }
    for (name, value) in &server.stats {
        table.push_str(&format!("  {name:<width$}  {value}\n"));
    }
    table
}

fn run(cli: Cli) -> Result<Outcome, String> {
    let mut out = std::io::stdout().lock();
    if let Command::Completions { shell } = cli.command {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "newcache", &mut buf);
        out.write_all(&buf).map_err(write_error)?;
        return Ok(Outcome::Ok);
    }
    let url = match cli.url {
        Some(url) => url,
        // A variable that is not UTF-8 was taken as unset: the default server was used,
        // silently (an outside audit).
        None => match std::env::var("NEWCACHE_URL") {
            Ok(url) => url,
            Err(std::env::VarError::NotPresent) => DEFAULT_URL.to_string(),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(
                    "NEWCACHE_URL is not valid UTF-8: give the URL in UTF-8 (percent-encode other bytes), or pass --url".into(),
                )
            }
        },
    };
    let mut config = Config::from_url(&url).map_err(|e| e.to_string())?;
    // `stats` and `flush` need no meta protocol: their connections skip the probe, an `mg`
    // memcached counts as a get and a miss (each `newcache stats` moved the counters it
    // showed: an outside audit).
    if matches!(cli.command, Command::Stats | Command::Flush)
        && config.transport == TransportKind::Text
        && config.protocol == WireProtocol::Auto
        && config.herd_policy != Policy::Meta
    {
        config.protocol = WireProtocol::Classic;
    }
    let cache = Builder::from_config(config)
        .build()
        .map_err(|e| e.to_string())?;
    let mut say = |text: &str| writeln!(out, "{text}").map_err(write_error);
    match cli.command {
        Command::Key(Key { key, .. }) => {
            let wire = cache.wire_key(&key).map_err(cli_error)?;
            say(&String::from_utf8_lossy(&wire))?;
        }
        Command::Get(Get { key, raw, .. }) => {
            // An item whose flags hold no herd state newcache reads (another application's
            // bits: `16 | 256`) is given as stored, and shown by its type bits, as Python's
            // clients read it.
            let Some(value) = cache.peek(&key).map_err(cli_error)?.map(|p| p.value) else {
                return Ok(Outcome::No);
            };
            if raw {
                out.write_all(&value.bytes)
                    .and_then(|()| out.flush())
                    .map_err(write_error)?;
            } else {
                match value.show_within(cache.config().inflate_limit) {
                    Ok(shown) => say(&shown)?,
                    Err(what) => {
                        // The library's advice names its API; here, the command's.
                        const API: &str = "read its bytes with get_raw";
                        const CLI: &str = "`get --raw` writes its bytes";
                        return Err(if what.contains(API) {
                            format!("{key:?} holds {}", what.replace(API, CLI))
                        } else {
                            format!("{key:?} holds {what}; {CLI}")
                        });
                    }
                }
            }
        }
        Command::Set(store) => match store.value()? {
            Value::Text(text) => cache.set(&store.key, text.as_str(), store.options()),
            Value::Bytes(bytes) => cache.set(&store.key, bytes.as_slice(), store.options()),
        }
        .map_err(cli_error)?,
        Command::Add(store) => {
            let added = match store.value()? {
                Value::Text(text) => cache.add(&store.key, text.as_str(), store.options()),
                Value::Bytes(bytes) => cache.add(&store.key, bytes.as_slice(), store.options()),
            };
            if !added.map_err(cli_error)? {
                return Ok(Outcome::No);
            }
        }
        Command::Delete(Key { key, .. }) => {
            cache.delete(&key).map_err(cli_error)?;
        }
        Command::Incr(Counter { key, delta, .. }) => {
            say(&cache.incr(&key, delta).map_err(cli_error)?.to_string())?
        }
        Command::Decr(Counter { key, delta, .. }) => {
            say(&cache.decr(&key, delta).map_err(cli_error)?.to_string())?
        }
        // `clear` flushes every server it reaches and names the first that failed: say that
        // the others that answered were flushed, or an operator takes their items for still
        // there (an outside audit).
        Command::Flush => cache
            .clear()
            .map_err(|e| match cache.config().servers.len() {
                1 => cli_error(e),
                _ => format!("{}; the servers that answered were flushed", cli_error(e)),
            })?,
        Command::Stats => {
            let servers = cache.stats().map_err(cli_error)?;
            let tables: Vec<String> = servers.iter().map(stats_table).collect();
            say(tables.join("\n").trim_end())?;
            // The servers that answered are shown; one that did not fails the command, so
            // a script (or a health check) does not take a partial answer for a whole one.
            let failed = servers.iter().filter(|s| s.failure.is_some()).count();
            if failed > 0 {
                return Err(format!(
                    "{failed} of {} servers did not answer (their tables say why)",
                    servers.len()
                ));
            }
        }
        Command::Completions { .. } => {}
    }
    Ok(Outcome::Ok)
}

/// A counter's delta: a whole number from 0 to 2^64-1. A negative one is read as a number,
/// not as an unknown option (clap told to write `-- -5`, which then failed as a delta).
fn parse_delta(s: &str) -> Result<u64, String> {
    if s.starts_with('-') {
        return Err("the delta is 0 or more; incr adds it, decr subtracts it".into());
    }
    s.parse()
        .map_err(|e| format!("the delta is a whole number from 0 to 2^64-1 ({e})"))
}

/// A library error as the CLI prints it: the library's advice names its API, and a CLI
/// user's spelling of `Ttl::Forever` is `--ttl forever`.
fn cli_error(e: newcache::Error) -> String {
    match e {
        newcache::Error::TtlTooLong(t) => format!(
            "a TTL of {} s ends past 2038-01-19 03:14:07 UTC, the latest expiry memcached \
             can keep; use --ttl forever for a value that should not expire",
            t.secs
        ),
        // The library's advice names its API; here, the commands'.
        newcache::Error::NotFound { key } => format!(
            "{key:?} holds no value: incr and decr change an existing counter; store one \
             first with `newcache set KEY 0 --no-herd`"
        ),
        other => other.to_string(),
    }
}

fn main() -> ExitCode {
    // Usage errors (exit 2), help and --version (exit 0) are clap's words, written here so
    // that a failed write is told: a closed stdout is quiet (exit 0), any other failure
    // (a full disk, /dev/full) is an error (clap's own exit ignored it: exit 0, nothing
    // written).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = u8::try_from(e.exit_code()).unwrap_or(2);
            return match e.print().map_err(write_error) {
                Ok(()) => ExitCode::from(code),
                Err(msg) if msg == CLOSED_STDOUT => ExitCode::from(code),
                Err(msg) => complain(&msg),
            };
        }
    };
    match run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::No) => ExitCode::from(1),
        Err(msg) if msg == CLOSED_STDOUT => ExitCode::SUCCESS,
        Err(msg) => complain(&msg),
    }
}

/// Says why the command failed on stderr, and exits 2. A stderr that cannot be written
/// (`2>/dev/full`, a closed pipe) loses the message, not the exit status: `eprintln!`
/// panicked there (exit 101: an outside audit).
fn complain(msg: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "newcache: {msg}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_interface_is_consistent() {
        Cli::command().debug_assert();
    }
}
