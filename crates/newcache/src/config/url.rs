//! The `newcache://` URL: [`Config::from_url`] and the parsing of its parameters.

use std::path::PathBuf;
use std::time::Duration;

use newcache_herd::{Policy, Ttl};
use newcache_placement::{looks_like_bare_ipv6, weight_refused, MAX_WEIGHT};

use super::{bad, Config, EnvelopeFormat, KeyFunctionKind, Secret, TransportKind, WireProtocol};
use crate::codec::ValueCodec;
use crate::error::Result;

pub(super) fn parse_num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
    value.parse().map_err(|_| {
        // All digits, yet not taken: a number too large for the setting, not a typo.
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            bad(format_args!(
                "{name}={value} is too large for this setting; give a smaller number"
            ))
        } else {
            bad(format_args!("{name}={value:?} is not a valid number"))
        }
    })
}

pub(super) fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(bad(format_args!(
            "{name}={value:?} is not a boolean (use true or false)"
        ))),
    }
}

pub(super) fn parse_ttl(name: &str, value: &str) -> Result<Ttl> {
    match value {
        "forever" | "none" | "never" => Ok(Ttl::Forever),
        _ => Ok(Ttl::Seconds(parse_num(name, value)?)),
    }
}

/// `url` with the value of its `password` parameter replaced by `***`, and what follows it
/// left out (a password may hold a literal `&`: `password=hun&ter2` showed `ter2`, an outside
/// audit), for error messages; a URL with credentials before the host
/// (`user:password@host`, in any scheme) is not shown at all (one of another scheme, or with
/// a fragment, was shown whole, password and all: an outside audit).
fn redacted(url: &str) -> String {
    // A password may hold '?' or '/' and split where the host or the query seems to begin:
    // no part of such a URL is shown (parts of passwords were: two reviews).
    if has_credentials(url) {
        return "(not shown: it holds credentials before the host)".into();
    }
    // A fragment is not shown: it may hold a password too (a review: `#password=...`).
    let (url, fragment) = match url.split_once('#') {
        Some((url, _)) => (url, "#(not shown)"),
        None => (url, ""),
    };
    // Past that check, nothing before the query holds an '@'.
    let Some((head, query)) = url.split_once('?') else {
        return format!("{url}{fragment}");
    };
    let mut shown: Vec<&str> = Vec::new();
    let mut pairs = query.split('&');
    for pair in pairs.by_ref() {
        // In any case (`PASSWORD=` in another scheme's URL was shown: a review).
        if pair
            .split_once('=')
            .map_or(pair, |(name, _)| name)
            .eq_ignore_ascii_case("password")
        {
            shown.push("password=***");
            break;
        }
        shown.push(pair);
    }
    if pairs.next().is_some() {
        shown.push("(the rest not shown)");
    }
    format!("{head}?{}{fragment}", shown.join("&"))
}

/// The parameters a URL takes (and `behaviors.NAME`).
const PARAMETERS: [&str; 35] = [
    "flavor",
    "version",
    "name",
    "herd_timeout",
    "herd",
    "lease_wait",
    "early_beta",
    "timeout",
    "key_function",
    "key_prefix",
    "transport",
    "binary",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "max_idle",
    "max_connections",
    "idle_timeout",
    "async_connections",
    "async_queue",
    "protocol",
    "item_size_limit",
    "codec",
    "compress_threshold",
    "min_compress_len",
    "inflate_limit",
    "envelope",
    "username",
    "password",
    "tls",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_server_name",
    "behaviors",
];

/// Whether `pair` is `name=value` with `name` one of [`PARAMETERS`] (or `behaviors.NAME`).
fn is_parameter(pair: &str) -> bool {
    pair.split_once('=').is_some_and(|(name, _)| {
        PARAMETERS.contains(&name)
            || name.strip_prefix("behaviors.").is_some_and(|b| {
                !b.is_empty() && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
            })
    })
}

/// Whether `url` holds an '@' anywhere but in a parameter's value (`username=a@b`):
/// credentials before the host (`user:password@host`), in any scheme, whatever the
/// password holds. The query begins at the first '?' that a parameter follows: a '?' in a
/// password, even one followed by `a=b`, is not taken for it (a password was shown whole
/// through a server's error: reviews).
fn has_credentials(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let mut start = None;
    for (at, _) in rest.match_indices('?') {
        let after = rest.get(at + 1..).unwrap_or("");
        if is_parameter(after.split('&').next().unwrap_or("")) {
            start = Some(at);
            break;
        }
    }
    let (hosts, query) = match start {
        Some(at) => (
            rest.get(..at).unwrap_or(rest),
            rest.get(at + 1..).unwrap_or(""),
        ),
        None => (rest, ""),
    };
    hosts.contains('@')
        || query
            .split('&')
            .any(|pair| !is_parameter(pair) && pair.contains('@'))
}

pub(super) fn percent_decode(name: &str, s: &str) -> Result<String> {
    decode_escapes(name, s, true)
}

/// A URL's server entry, a unix-domain socket's path percent-decoded (`%40` for an `@`,
/// which a URL cannot hold as it is, nor `;`, `,` or `?`: `%3B`, `%2C`, `%3F`; a `+` stays
/// a `+`); any other entry as it is.
fn decoded_entry(entry: &str) -> Result<String> {
    let trimmed = entry.trim();
    let path = trimmed.strip_prefix("unix:").unwrap_or(trimmed);
    match path.starts_with('/') && path.contains('%') {
        true => decode_escapes("server", path, false),
        false => Ok(entry.to_string()),
    }
}

/// `%XX` escapes decoded, and with `plus_is_space` a `+` as a space (a query string's
/// rule); the result must be UTF-8. Errors name `name` (and never show a password).
fn decode_escapes(name: &str, s: &str, plus_is_space: bool) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| match name {
                        "password" => bad("password: bad percent-escape (the value is not shown)"),
                        _ => bad(format_args!("{name}: bad percent-escape in {s:?}")),
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| match name {
        // Shown, the password was (a review).
        "password" => bad("password: not UTF-8 once decoded (the value is not shown)"),
        _ => bad(format_args!("{name}: {s:?} is not UTF-8")),
    })
}

/// Checks a server entry: `host`, `host:port`, or `[v6]:port`; or a unix-domain socket,
/// `/path` (pylibmc's and libmemcached's form, kept as is) or `unix:/path` (python-memcached's,
/// pymemcache's and Django's, kept as `/path`).
pub(super) fn parse_server(entry: &str) -> Result<String> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Err(bad("empty server entry in the server list"));
    }
    let path = entry.strip_prefix("unix:").unwrap_or(entry);
    if !path.starts_with('/') {
        if let Some((_, host)) = entry.rsplit_once('@') {
            // `user:password@host`, the usual URL form: refused without echoing the entry,
            // whose password every message below would print (an outside audit). (A socket
            // path may hold an '@': a URL writes it `%40`, see `decoded_entry`.)
            return Err(bad(format_args!(
                "server \"<credentials>@{host}\": credentials do not go before the host; give username= and password= parameters (SASL, with binary=true)"
            )));
        }
    }
    if path.starts_with('/') {
        if path.len() < 2 || path.ends_with('/') || path.chars().any(char::is_control) {
            return Err(bad(format_args!(
                "server {entry:?}: a unix-domain socket is given by its absolute path, e.g. /run/memcached.sock"
            )));
        }
        return Ok(path.to_string());
    }
    if entry.contains('/') {
        return Err(bad(format_args!(
            "server {entry:?}: unexpected '/'; a unix-domain socket is given by its absolute path (newcache:///run/memcached.sock or newcache://unix:/run/memcached.sock), and nothing follows the servers but /?parameters"
        )));
    }
    let (host, rest) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(format_args!("server {entry:?}: unclosed '['")))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad(format_args!(
                "server {entry:?}: [{host}] is not an IPv6 address (brackets are for IPv6, e.g. [::1]:11211)"
            )));
        }
        let rest = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| {
                bad(format_args!(
                    "server {entry:?}: expected :port after the address, found {after:?}"
                ))
            })?),
        };
        (format!("[{host}]"), rest)
    } else {
        // An IPv6 address without brackets (`::1:11211`): its colons cannot be told from
        // the port's.
        if looks_like_bare_ipv6(entry) {
            return Err(bad(format_args!(
                "server {entry:?}: an IPv6 address goes in brackets, its port after them (e.g. [::1]:11211)"
            )));
        }
        match entry.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (entry.to_string(), None),
        }
    };
    let (port, weight) = match rest.map(|r| r.split_once(':')) {
        Some(Some((p, w))) => (Some(p), Some(w)),
        Some(None) => (rest, None),
        None => (None, None),
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    if !host_ok {
        return Err(bad(format_args!(
            "server {entry:?}: {host:?} is not a host name or address (letters, digits, '.', '-', '_'; IPv6 in brackets)"
        )));
    }
    let port: u16 = match port {
        None => 11211,
        Some(p) => p.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            bad(format_args!(
                "server {entry:?}: port {p:?} is not a number from 1 to 65535"
            ))
        })?,
    };
    match weight {
        None => Ok(format!("{host}:{port}")),
        Some(w) => {
            let w: u32 = w
                .parse()
                .ok()
                .filter(|w| (1..=MAX_WEIGHT).contains(w))
                .ok_or_else(|| bad(format_args!("server {entry:?}: {}", weight_refused(w))))?;
            Ok(format!("{host}:{port}:{w}"))
        }
    }
}

impl Config {
    /// Parses a `newcache://` URL:
    /// `newcache://host:port;host:port/?flavor=staging&version=2&herd_timeout=60&timeout=300`.
    ///
    /// Servers are split by `;` (or `,`). Parameters: `flavor`, `version`, `herd_timeout`,
    /// `herd` (`lease`, the default; `reinsert`; `early`; `meta`; `off`, also `false` or
    /// `none`; `on` or `true` for the default policy), `lease_wait` (ms),
    /// `early_beta`, `timeout` (the default TTL in seconds, or `forever`),
    /// `name` (the cache's name in metrics and traces),
    /// `key_function` (`newcache` or `django`), `key_prefix`, `transport` (`text`, `memory`,
    /// `libmemcached`), `binary` (`true` selects libmemcached's binary protocol),
    /// `connect_timeout`, `read_timeout`, `write_timeout` (milliseconds), `max_idle`,
    /// `max_connections`, `idle_timeout` (seconds), `async_connections`, `async_queue`,
    /// `protocol` (`auto`, `meta`, `classic`),
    /// `item_size_limit` (bytes), `codec` (`bincode`, the default, `json` or `pickle`),
    /// `compress_threshold` (bytes; pylibmc's name `min_compress_len` works too),
    /// `inflate_limit` (bytes), `envelope` (`newcache`, the default, or `django-newcache`);
    /// `behaviors.NAME=value` (pylibmc's behavior names: all of
    /// them with libmemcached, the placement, failover and timeout ones with the text
    /// transport); with libmemcached's binary protocol, `username`/`password` for SASL;
    /// `tls=true` with `tls_ca` (a PEM CA file), optionally `tls_cert` and `tls_key` (a
    /// client certificate) and `tls_server_name` (the text transport, feature `tls`; the
    /// server's certificate is always verified).
    /// Servers may carry a weight (`host:port:weight`). A unix-domain socket is given by its
    /// absolute path, as pylibmc writes one (`newcache:///run/memcached.sock`) or with
    /// python-memcached's and Django's `unix:` (`newcache://unix:/run/memcached.sock`); a
    /// path is percent-decoded (an `@`, `;`, `,` or `?` in it written `%40`, `%3B`, `%2C`,
    /// `%3F`). An unknown, repeated or malformed parameter is an error,
    /// and so is one the chosen key function or transport would drop: `flavor` with
    /// `key_function=django` (`key_prefix` keeps Django's keys apart), and `max_idle`,
    /// `protocol`, `async_connections` or `async_queue` other than their defaults with
    /// libmemcached (the text transport's settings).
    /// Parameter values are decoded as a query string is: `%XX` escapes, and `+` is a space
    /// (write a `+` in a password or a file path as `%2B`; in a socket path a `+` stays). `idle_timeout=0` keeps idle connections until
    /// the cache is dropped.
    pub fn from_url(url: &str) -> Result<Config> {
        if url.contains('#') {
            return Err(bad(format_args!(
                "URL {:?} has a fragment (#...), which newcache URLs do not take: write # in a value as %23",
                redacted(url)
            )));
        }
        let rest = url.strip_prefix("newcache://").ok_or_else(|| {
            bad(format_args!(
                "URL {:?} must start with newcache:// (e.g. newcache://127.0.0.1:11211/)",
                redacted(url)
            ))
        })?;
        // Credentials before a host, which may hold a '?' or a '/' (they split the server
        // list inside the password, and the server's error showed a part of it: two
        // reviews). Not shown at all.
        if has_credentials(url) {
            return Err(bad(
                "the URL holds credentials before the host (user:password@host), which is not shown; credentials go in username= and password= parameters (SASL, with binary=true); an '@' in a socket path is written %40",
            ));
        }
        let (hosts, query) = match rest.split_once('?') {
            Some((h, q)) => (h, q),
            None => (rest, ""),
        };
        // `newcache://host/?...`; a unix-domain socket's path keeps its slashes
        // (`newcache:///run/memcached.sock`); entries with any other '/' are refused.
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        let mut config = Config {
            // No servers at all is for the memory transport (checked below); an empty entry
            // in a list (`a;;b`, a trailing `;`) is a typo, and an error.
            servers: if hosts.trim().is_empty() {
                Vec::new()
            } else {
                hosts
                    .split([';', ','])
                    .map(|entry| {
                        // A URL with an '@' anywhere may have a password where the servers
                        // seem to be: the entry is not shown then.
                        decoded_entry(entry).and_then(|entry| parse_server(&entry)).map_err(|e| match url.contains('@') {
                            true => bad("a server entry is malformed (not shown: the URL holds an '@', which may belong to a password)"),
                            false => e,
                        })
                    })
                    .collect::<Result<_>>()?
            },
            ..Config::default()
        };
        let mut seen: Vec<String> = Vec::new();
        let mut binary: Option<bool> = None;
        let mut transport: Option<TransportKind> = None;
        let mut key_function: Option<String> = None;
        let mut key_prefix: Option<String> = None;
        // Whether the pair being read comes after a password: its errors then show none of
        // it, as it may be the rest of a password holding a literal '&' (a review: a
        // `timeout=` after `password=SEC&` showed its value).
        let mut past_password = false;
        let parsed = (|| -> Result<()> {
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                // After a password, a piece that is no parameter may be the rest of a password
                // holding a literal '&': not shown (it was: a review).
                past_password = seen.iter().any(|s| s == "password");
                let hidden = past_password && !is_parameter(pair);
                let (name, raw) = pair.split_once('=').ok_or_else(|| {
                    if hidden {
                        bad("a parameter after password= has no value (not shown: it may be part of the password; write & in a value as %26)")
                    } else {
                        bad(format_args!("parameter {pair:?} has no value (name=value)"))
                    }
                })?;
                if hidden {
                    return Err(bad(
                        "an unknown parameter after password= (not shown: it may be part of the password; write & in a value as %26)",
                    ));
                }
                let value = percent_decode(name, raw)?;
                let value = value.as_str();
                if seen.iter().any(|s| s == name) {
                    return Err(bad(format_args!("parameter {name} is given twice")));
                }
                seen.push(name.to_string());
                match name {
                    "flavor" => config.flavor = value.to_string(),
                    "name" => config.name = value.to_string(),
                    "version" => config.version = value.to_string(),
                    "herd_timeout" => config.herd_timeout = parse_num(name, value)?,
                    "herd" => match value {
                        "on" | "true" => config.herd = true,
                        "off" | "false" | "none" => config.herd = false,
                        name => {
                            config.herd_policy = Policy::from_name(name).ok_or_else(|| {
                                bad(format_args!("herd={value:?}: use lease (the default), reinsert, early, meta or off"))
                            })?;
                        }
                    },
                    "lease_wait" => config.lease_wait = Duration::from_millis(parse_num(name, value)?),
                    "early_beta" => config.early_beta = parse_num::<f64>(name, value)?,
                    "timeout" => config.default_ttl = parse_ttl(name, value)?,
                    "key_function" => key_function = Some(value.to_string()),
                    "key_prefix" => key_prefix = Some(value.to_string()),
                    "transport" => {
                        transport = Some(match value {
                            "text" => TransportKind::Text,
                            "memory" => TransportKind::Memory,
                            "libmemcached" => TransportKind::Libmemcached { binary: false },
                            _ => {
                                return Err(bad(format_args!(
                                    "transport={value:?}: use text, memory or libmemcached"
                                )))
                            }
                        })
                    }
                    "binary" => binary = Some(parse_bool(name, value)?),
                    "connect_timeout" => {
                        config.connect_timeout = Duration::from_millis(parse_num(name, value)?)
                    }
                    "read_timeout" => config.read_timeout = Duration::from_millis(parse_num(name, value)?),
                    "write_timeout" => {
                        config.write_timeout = Duration::from_millis(parse_num(name, value)?)
                    }
                    "max_idle" => config.max_idle_per_server = parse_num(name, value)?,
                    "max_connections" => config.max_connections = parse_num(name, value)?,
                    "async_connections" => config.async_connections = parse_num(name, value)?,
                    "async_queue" => config.async_queue = parse_num(name, value)?,
                    "idle_timeout" => {
                        config.idle_timeout = Duration::from_secs(parse_num(name, value)?)
                    }
                    "protocol" => {
                        config.protocol = match value {
                            "auto" => WireProtocol::Auto,
                            "meta" => WireProtocol::Meta,
                            "classic" => WireProtocol::Classic,
                            _ => {
                                return Err(bad(format_args!(
                                    "protocol={value:?}: use auto (the default), meta or classic"
                                )))
                            }
                        }
                    }
                    "item_size_limit" => config.item_size_limit = parse_num(name, value)?,
                    "codec" => {
                        config.codec = ValueCodec::from_name(value).ok_or_else(|| {
                            bad(format_args!("codec={value:?}: use bincode, json or pickle"))
                        })?
                    }
                    "compress_threshold" | "min_compress_len" => {
                        if seen.iter().filter(|s| *s == "compress_threshold" || *s == "min_compress_len").count() > 1 {
                            return Err(bad("give compress_threshold or min_compress_len, not both"));
                        }
                        config.compress_threshold =
                            Some(parse_num::<usize>(name, value)?).filter(|n| *n > 0);
                    }
                    "inflate_limit" => config.inflate_limit = parse_num(name, value)?,
                    "envelope" => {
                        config.envelope = match value {
                            "newcache" => EnvelopeFormat::Newcache,
                            "django-newcache" => EnvelopeFormat::DjangoNewcache,
                            _ => {
                                return Err(bad(format_args!(
                                    "envelope={value:?}: use newcache (the default) or django-newcache"
                                )))
                            }
                        }
                    }
                    "tls" => config.tls = parse_bool(name, value)?,
                    "tls_ca" => config.tls_ca = Some(PathBuf::from(value)),
                    "tls_cert" => config.tls_cert = Some(PathBuf::from(value)),
                    "tls_key" => config.tls_key = Some(PathBuf::from(value)),
                    "tls_server_name" => config.tls_server_name = Some(value.to_string()),
                    "username" => config.username = Some(value.to_string()),
                    "password" => config.password = Some(Secret(value.to_string())),
                    n if n.starts_with("behaviors.") => {
                        let behavior = &n["behaviors.".len()..];
                        config.behaviors.push((behavior.to_string(), value.to_string()));
                    }
                    _ => {
                        return Err(bad(format_args!(
                            "unknown parameter {name:?}; known: flavor, version, name, herd_timeout, herd, lease_wait, early_beta, timeout, key_function, key_prefix, transport, binary, connect_timeout, read_timeout, write_timeout, max_idle, max_connections, idle_timeout, async_connections, async_queue, protocol, item_size_limit, codec, compress_threshold (or min_compress_len), inflate_limit, envelope, username, password, tls, tls_ca, tls_cert, tls_key, tls_server_name, behaviors.NAME"
                        )))
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = parsed {
            return Err(match past_password {
                true => bad("a parameter after password= is not valid (not shown: it may be part of the password; write & in a value as %26, or put password= last to see which)"),
                false => e,
            });
        }
        config.transport = match (transport, binary) {
            (Some(TransportKind::Libmemcached { .. }), b) => TransportKind::Libmemcached {
                binary: b.unwrap_or(false),
            },
            (None, Some(true)) => TransportKind::Libmemcached { binary: true },
            (Some(t), Some(true)) => {
                return Err(bad(format_args!(
                    "binary=true asks for libmemcached, but transport={t:?} was given too"
                )))
            }
            (t, _) => t.unwrap_or(TransportKind::Text),
        };
        config.key_function = match (key_function.as_deref(), key_prefix) {
            (None | Some("newcache"), None) => KeyFunctionKind::Newcache,
            (Some("newcache"), Some(_)) | (None, Some(_)) => return Err(bad(
                "key_prefix goes with key_function=django (the newcache key function uses flavor)",
            )),
            (Some("django"), prefix) => KeyFunctionKind::Django {
                key_prefix: prefix.unwrap_or_default(),
            },
            (Some(other), _) => {
                return Err(bad(format_args!(
                    "key_function={other:?}: use newcache or django"
                )))
            }
        };
        // The same timeout given twice, once by newcache's name and once by libmemcached's
        // behavior: the behavior won, silently (an outside audit).
        let given = |name: &str| seen.iter().any(|s| s == name);
        for (ours, behavior) in [
            (&["connect_timeout"][..], "connect_timeout"),
            (&["read_timeout", "write_timeout"][..], "_poll_timeout"),
        ] {
            if let Some(ours) = ours.iter().find(|n| given(n)) {
                if given(&format!("behaviors.{behavior}")) {
                    return Err(bad(format_args!(
                        "{ours} and behaviors.{behavior} both set the same timeout; give one"
                    )));
                }
            }
        }
        if config.transport == TransportKind::Memory && !config.servers.is_empty() {
            return Err(super::validate::memory_with_servers(&config.servers));
        }
        if config.servers.is_empty() && config.transport != TransportKind::Memory {
            return Err(bad(format_args!(
                "URL {:?} names no server (e.g. newcache://127.0.0.1:11211/)",
                redacted(url)
            )));
        }
        config.validate()?;
        Ok(config)
    }
}
