//! Configuration: the `newcache://` URL and the [`Builder`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use newcache_herd::{Clock, Policy, StalePolicy, SystemClock, Ttl, Xfetch, DEFAULT_HERD_TIMEOUT};
use newcache_keyfn::{HashedKey, KeyFunction, PrefixedKey};
use newcache_transport::{Transport, DEFAULT_ITEM_SIZE_LIMIT};

use crate::codec::ValueCodec;
use crate::error::{Error, Result};
use crate::ops::Core;
use crate::Cache;

/// Which transport carries the items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// memcached's text protocol in Rust (feature `text`, the default).
    Text,
    /// The in-process memory transport (feature `memory`): no server, for tests and demos.
    Memory,
    /// libmemcached, in binary (`true`) or text mode (feature `binary`).
    Libmemcached {
        /// Binary protocol (`binary=true` in the URL) rather than text.
        binary: bool,
    },
}

/// How herd-protected values are stored, `envelope=` in the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvelopeFormat {
    /// newcache's own (the default): the value exactly as Python's clients store it, its
    /// soft expiry in the item's flags ([`newcache_herd::Envelope::flags`]).
    #[default]
    Newcache,
    /// django-newcache's: `pickle.dumps((newcache.Marker(), value, expiry))` with flag 1, for
    /// a cluster shared with Django apps still on django-newcache during a migration (they
    /// read and protect these values as their own). Values are pickled (protocol 5), so this
    /// needs the `pickle` feature. newcache reads this format whatever the setting.
    DjangoNewcache,
}

impl EnvelopeFormat {
    /// Its name in the URL.
    pub fn name(self) -> &'static str {
        match self {
            EnvelopeFormat::Newcache => "newcache",
            EnvelopeFormat::DjangoNewcache => "django-newcache",
        }
    }
}

/// Which protocol the text transport speaks, `protocol=` in the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireProtocol {
    /// Meta commands (every reply matched to its request by an opaque token) where the
    /// server speaks them, memcached 1.6 and later; the classic commands elsewhere (the
    /// default). Each server is probed once.
    #[default]
    Auto,
    /// Meta commands only.
    Meta,
    /// The classic commands only (memcached before 1.6, twemproxy): replies are checked as
    /// far as that protocol allows.
    Classic,
}

impl WireProtocol {
    /// Its name in the URL.
    pub fn name(self) -> &'static str {
        match self {
            WireProtocol::Auto => "auto",
            WireProtocol::Meta => "meta",
            WireProtocol::Classic => "classic",
        }
    }
}

/// Which built-in key function to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFunctionKind {
    /// `{flavor}-{version}-{sha1 hex}` (django-newcache's, the default).
    Newcache,
    /// `{key_prefix}:{version}:{key}` (Django's own default).
    Django {
        /// Django's KEY_PREFIX.
        key_prefix: String,
    },
}

/// Every setting of a cache, as parsed from a URL or set on a [`Builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Servers as `host:port` (port 11211 when omitted), or a unix-domain socket's absolute
    /// path (`/run/memcached.sock`, text transport).
    pub servers: Vec<String>,
    /// Key flavor (`FLAVOR` in django-newcache), default empty.
    pub flavor: String,
    /// The cache's name in metrics and traces (`name`), default `default`: tells apart the
    /// caches of one process. Never part of a key.
    pub name: String,
    /// Key version (`CACHE_VERSION`), default `1`: any text without spaces, as
    /// django-newcache allows (`v2`).
    pub version: String,
    /// The built-in key function, unless a custom one is given to the builder.
    pub key_function: KeyFunctionKind,
    /// Seconds a herd-protected item outlives its soft expiry (`CACHE_HERD_TIMEOUT`), default 60.
    pub herd_timeout: u32,
    /// Herd protection for stores that do not say otherwise, default on.
    pub herd: bool,
    /// What readers do with a value past its soft expiry, `herd=` in the URL: `lease` (the
    /// default, [`Policy::Lease`]: a CAS claim, exactly one reader recomputes), `reinsert`
    /// (django-newcache's racy re-store), `early` (XFetch on top of lease, see `early_beta`),
    /// `meta` (memcached 1.6's win flag over the text transport, falling back to lease on a
    /// server that refuses meta commands); `off` keeps this and turns [`Config::herd`] off.
    /// See docs/herd.md.
    pub herd_policy: Policy,
    /// XFetch's beta for `herd=early` (`early_beta`), default 1.0.
    pub early_beta: f64,
    /// How long `get_or_set` callers in other processes wait for the one loading a missing
    /// value before they run the loader themselves (`lease_wait`, ms), default 3 s.
    pub lease_wait: Duration,
    /// TTL of stores given [`Ttl::Default`], default 300 s.
    pub default_ttl: Ttl,
    /// The transport.
    pub transport: TransportKind,
    /// Connect timeout, default 250 ms.
    pub connect_timeout: Duration,
    /// Read timeout, default 500 ms.
    pub read_timeout: Duration,
    /// Write timeout, default 500 ms.
    pub write_timeout: Duration,
    /// Idle connections kept per server, default 16.
    pub max_idle_per_server: usize,
    /// Connections open at once per server (`max_connections`), default 64; callers wait
    /// for one up to the read timeout. 0: no cap. Text transport.
    pub max_connections: usize,
    /// Idle connections are closed after this long (`idle_timeout`, seconds), default 60 s.
    /// Text transport.
    pub idle_timeout: Duration,
    /// Connections per server of an [`AsyncCache`](crate::AsyncCache)'s text transport
    /// (`async_connections`), default 1: every task's requests share them, written together.
    pub async_connections: usize,
    /// Requests queued per connection of an `AsyncCache` before callers wait for room
    /// (`async_queue`), default 1024.
    pub async_queue: usize,
    /// The protocol the text transport speaks (`protocol=auto|meta|classic`).
    pub protocol: WireProtocol,
    /// The servers' item size limit in bytes (memcached's `-I`), default 1 MiB.
    pub item_size_limit: usize,
    /// How structured values are serialized (`codec=bincode|json|pickle`), default bincode.
    pub codec: ValueCodec,
    /// Values of this many bytes or more are stored zlib-compressed (flag 8, as pylibmc's
    /// `min_compress_len`) when that makes them smaller (`compress_threshold`, also read as
    /// `min_compress_len`); `None` (the default) never compresses. Compressed values are
    /// read whatever this says.
    pub compress_threshold: Option<usize>,
    /// The most a compressed value may inflate to when read (`inflate_limit`, bytes), default
    /// 32 MiB: a small value that inflates past it is an error, not gigabytes of memory.
    /// Values larger than this are not stored compressed.
    pub inflate_limit: usize,
    /// How herd-protected values are stored (`envelope=newcache|django-newcache`).
    pub envelope: EnvelopeFormat,
    /// libmemcached behaviors by pylibmc's names (`behaviors.NAME=value` in the URL), in the
    /// order given. The libmemcached transport takes them all; the text transport takes the
    /// placement, failover and timeout ones (see `newcache_transport_text::BEHAVIORS`).
    pub behaviors: Vec<(String, String)>,
    /// SASL user name (libmemcached binary mode).
    pub username: Option<String>,
    /// SASL password (libmemcached binary mode).
    pub password: Option<Secret>,
    /// TLS to every server (`tls=true`; memcached's `-Z`), text transport, feature `tls`.
    /// Servers' certificates are always verified, against [`Config::tls_ca`].
    pub tls: bool,
    /// The PEM file of the CA certificates servers' certificates must chain to (`tls_ca`);
    /// required with TLS.
    pub tls_ca: Option<PathBuf>,
    /// The PEM file of a client certificate chain (`tls_cert`), with [`Config::tls_key`].
    pub tls_cert: Option<PathBuf>,
    /// The PEM file of the client certificate's key (`tls_key`).
    pub tls_key: Option<PathBuf>,
    /// The name servers' certificates must carry (`tls_server_name`), instead of the host
    /// each is configured by; needed for a unix-domain socket.
    pub tls_server_name: Option<String>,
}

/// A password: compared and used as given, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            servers: vec!["127.0.0.1:11211".into()],
            flavor: String::new(),
            name: "default".to_string(),
            version: "1".into(),
            key_function: KeyFunctionKind::Newcache,
            herd_timeout: DEFAULT_HERD_TIMEOUT,
            herd: true,
            herd_policy: Policy::default(),
            early_beta: 1.0,
            lease_wait: Duration::from_secs(3),
            default_ttl: Ttl::Seconds(300),
            transport: TransportKind::Text,
            connect_timeout: Duration::from_millis(250),
            read_timeout: Duration::from_millis(500),
            write_timeout: Duration::from_millis(500),
            max_idle_per_server: 16,
            max_connections: 64,
            async_connections: 1,
            async_queue: 1024,
            idle_timeout: Duration::from_secs(60),
            protocol: WireProtocol::Auto,
            item_size_limit: DEFAULT_ITEM_SIZE_LIMIT,
            codec: ValueCodec::default(),
            compress_threshold: None,
            inflate_limit: crate::codec::DEFAULT_INFLATE_LIMIT,
            envelope: EnvelopeFormat::Newcache,
            behaviors: Vec::new(),
            username: None,
            password: None,
            tls: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_server_name: None,
        }
    }
}

fn bad(msg: impl fmt::Display) -> Error {
    Error::Config(msg.to_string())
}

fn parse_num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| bad(format_args!("{name}={value:?} is not a valid number")))
}

fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(bad(format_args!(
            "{name}={value:?} is not a boolean (use true or false)"
        ))),
    }
}

fn parse_ttl(name: &str, value: &str) -> Result<Ttl> {
    match value {
        "forever" | "none" | "never" => Ok(Ttl::Forever),
        _ => Ok(Ttl::Seconds(parse_num(name, value)?)),
    }
}

fn percent_decode(name: &str, s: &str) -> Result<String> {
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
                    .ok_or_else(|| bad(format_args!("{name}: bad percent-escape in {s:?}")))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad(format_args!("{name}: {s:?} is not UTF-8")))
}

/// Checks a server entry: `host`, `host:port`, or `[v6]:port`; or a unix-domain socket,
/// `/path` (pylibmc's and libmemcached's form, kept as is) or `unix:/path` (python-memcached's,
/// pymemcache's and Django's, kept as `/path`).
fn parse_server(entry: &str) -> Result<String> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Err(bad("empty server entry in the server list"));
    }
    let path = entry.strip_prefix("unix:").unwrap_or(entry);
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
            let w: u32 = w.parse().ok().filter(|w| *w > 0).ok_or_else(|| {
                bad(format_args!(
                    "server {entry:?}: weight {w:?} is not a positive number"
                ))
            })?;
            Ok(format!("{host}:{port}:{w}"))
        }
    }
}

impl Config {
    /// Parses a `newcache://` URL:
    /// `newcache://host:port;host:port/?flavor=staging&version=2&herd_timeout=60&timeout=300`.
    ///
    /// Servers are split by `;` (or `,`). Parameters: `flavor`, `version`, `herd_timeout`,
    /// `herd` (`lease`, the default; `reinsert`; `early`; `meta`; `off`), `lease_wait` (ms),
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
    /// python-memcached's and Django's `unix:` (`newcache://unix:/run/memcached.sock`); paths
    /// with `;`, `,` or `?` cannot be written in a URL. An unknown, repeated or malformed parameter is an error.
    pub fn from_url(url: &str) -> Result<Config> {
        let rest = url.strip_prefix("newcache://").ok_or_else(|| {
            bad(format_args!(
                "URL {url:?} must start with newcache:// (e.g. newcache://127.0.0.1:11211/)"
            ))
        })?;
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
                    .map(parse_server)
                    .collect::<Result<_>>()?
            },
            ..Config::default()
        };
        let mut seen: Vec<String> = Vec::new();
        let mut binary: Option<bool> = None;
        let mut transport: Option<TransportKind> = None;
        let mut key_function: Option<String> = None;
        let mut key_prefix: Option<String> = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, raw) = pair
                .split_once('=')
                .ok_or_else(|| bad(format_args!("parameter {pair:?} has no value (name=value)")))?;
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
                "early_beta" => {
                    config.early_beta = parse_num::<f64>(name, value)?;
                    if !(config.early_beta.is_finite() && config.early_beta > 0.0) {
                        return Err(bad(format_args!("early_beta={value:?} must be a positive number")));
                    }
                }
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
        for (name, value) in &config.behaviors {
            check_behavior(config.transport, name, value)?;
        }
        if config.username.is_some() != config.password.is_some() {
            return Err(bad("give both username and password, or neither"));
        }
        if config.username.is_some()
            && config.transport != (TransportKind::Libmemcached { binary: true })
        {
            return Err(bad(
                "SASL (username/password) needs libmemcached's binary protocol: add binary=true",
            ));
        }
        if config.servers.is_empty() && config.transport != TransportKind::Memory {
            return Err(bad(format_args!(
                "URL {url:?} names no server (e.g. newcache://127.0.0.1:11211/)"
            )));
        }
        config.validate()?;
        Ok(config)
    }

    /// The built-in key function these settings name (`key_function`, `flavor`,
    /// `key_prefix`, `version`).
    pub(crate) fn builtin_key_function(&self) -> Arc<dyn KeyFunction> {
        match &self.key_function {
            KeyFunctionKind::Newcache => {
                Arc::new(HashedKey::new(self.flavor.clone(), &self.version))
            }
            KeyFunctionKind::Django { key_prefix } => {
                Arc::new(PrefixedKey::new(key_prefix.clone(), &self.version))
            }
        }
    }

    /// Checks the settings that make sense on their own, whoever set them (a URL or a
    /// [`Builder`]): every I/O timeout is at least 1 ms, the default TTL is not zero (that
    /// would make every default store a delete), the herd timeout is not zero while herd
    /// protection is on, the codec is compiled in, and the built-in key function makes valid
    /// keys with this flavor or prefix.
    pub fn validate(&self) -> Result<()> {
        let defaults = Config::default();
        for (name, timeout, default) in [
            (
                "connect_timeout",
                self.connect_timeout,
                defaults.connect_timeout,
            ),
            ("read_timeout", self.read_timeout, defaults.read_timeout),
            ("write_timeout", self.write_timeout, defaults.write_timeout),
        ] {
            if timeout.is_zero() {
                return Err(bad(format_args!(
                    "{name} is zero; give at least 1 ms (the default is {} ms)",
                    default.as_millis()
                )));
            }
        }
        if self.async_connections == 0 || self.async_queue == 0 {
            return Err(bad(
                "async_connections and async_queue must be at least 1 (defaults: 1 connection per server, 1024 queued requests)",
            ));
        }
        if self.default_ttl == Ttl::Seconds(0) {
            return Err(bad(
                "timeout=0 would make every store with the default TTL a delete (a zero TTL expires at once, as in Django); for no expiry use timeout=forever (Ttl::Forever)",
            ));
        }
        if self.herd && self.herd_timeout == 0 {
            return Err(bad(
                "herd_timeout=0 leaves no time to serve the old value; give the seconds an item outlives its soft expiry (default 60), or turn herd protection off with herd=off",
            ));
        }
        // A build with no codec feature stores plain values only; its default codec is then
        // not compiled in either, and only a structured value is refused (at encode time).
        let plain_only_default = !ValueCodec::Bincode.compiled_in()
            && !ValueCodec::Json.compiled_in()
            && !ValueCodec::Pickle.compiled_in()
            && self.codec == ValueCodec::default();
        if !self.codec.compiled_in() && !plain_only_default {
            return Err(bad(format_args!(
                "codec={} needs newcache's `{}` feature; enable it in Cargo.toml",
                self.codec.name(),
                self.codec.name()
            )));
        }
        if self.envelope == EnvelopeFormat::DjangoNewcache && !ValueCodec::Pickle.compiled_in() {
            return Err(bad(
                "envelope=django-newcache pickles values: enable newcache's `pickle` feature",
            ));
        }
        self.validate_tls()?;
        let setting = match self.key_function {
            KeyFunctionKind::Newcache => "flavor",
            KeyFunctionKind::Django { .. } => "key_prefix",
        };
        // A hashed key's length does not depend on the key; a readable one's does, so try
        // the shortest key: if even that is refused, every key is.
        if let Err(e) = newcache_keyfn::make_key(self.builtin_key_function().as_ref(), "") {
            return Err(bad(format_args!(
                "this {setting} or version makes every key invalid ({e}); memcached keys take no spaces or control characters and at most 250 bytes"
            )));
        }
        Ok(())
    }
}

impl Config {
    /// TLS settings make sense together: `tls_*` only with TLS on, a CA file with it, a
    /// client certificate with its key, the text transport, newcache's `tls` feature.
    fn validate_tls(&self) -> Result<()> {
        if !self.tls {
            if self.tls_ca.is_some()
                || self.tls_cert.is_some()
                || self.tls_key.is_some()
                || self.tls_server_name.is_some()
            {
                return Err(bad(
                    "tls_ca, tls_cert, tls_key and tls_server_name go with tls=true (add it to use TLS)",
                ));
            }
            return Ok(());
        }
        if self.transport != TransportKind::Text {
            return Err(bad(format_args!(
                "tls=true: TLS is supported by the text transport only (transport is {:?})",
                self.transport
            )));
        }
        if !cfg!(feature = "tls") {
            return Err(bad(
                "tls=true needs newcache's `tls` feature; enable it in Cargo.toml (newcache never falls back to plain text silently)",
            ));
        }
        if self.tls_ca.is_none() {
            return Err(bad(
                "tls=true needs tls_ca: the PEM file of the CA that signed the servers' certificates (they are always verified)",
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(bad("a client certificate needs both tls_cert and tls_key"));
        }
        Ok(())
    }
}

/// Builds a [`Cache`]: every URL setting, plus a custom key function, transport or clock.
///
/// ```
/// use newcache::{Cache, Ttl};
/// # #[cfg(feature = "memory")] {
/// let cache = Cache::builder()
///     .memory()
///     .flavor("staging")
///     .version(2)
///     .default_ttl(Ttl::Seconds(60))
///     .build()
///     .unwrap();
/// assert_eq!(cache.wire_key("games").unwrap(), b"staging-2-dd27204535de317c6202952eeb2043fad52e3fec");
/// # }
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct Builder {
    config: Config,
    key_function: Option<Arc<dyn KeyFunction>>,
    transport: Option<Arc<dyn Transport>>,
    #[cfg(feature = "tokio")]
    async_transport: Option<Arc<dyn newcache_transport::AsyncTransport>>,
    clock: Option<Arc<dyn Clock>>,
    policy: Option<Arc<dyn StalePolicy>>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("custom_key_function", &self.key_function.is_some())
            .field("custom_transport", &self.transport)
            .finish()
    }
}

impl Builder {
    /// A builder with every default (one server at 127.0.0.1:11211, text transport).
    pub fn new() -> Self {
        Builder::default()
    }

    /// A builder starting from a parsed configuration.
    pub fn from_config(config: Config) -> Self {
        Builder {
            config,
            ..Builder::default()
        }
    }

    /// A builder starting from a `newcache://` URL (see [`Config::from_url`]).
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(Builder::from_config(Config::from_url(url)?))
    }

    /// The servers, as `host:port` (or `host`, port 11211).
    pub fn servers<I, S>(mut self, servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.servers = servers.into_iter().map(Into::into).collect();
        self
    }

    /// The cache's name in metrics and traces (default `default`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The key flavor (django-newcache's `FLAVOR`).
    pub fn flavor(mut self, flavor: impl Into<String>) -> Self {
        self.config.flavor = flavor.into();
        self
    }

    /// The key version (django-newcache's `CACHE_VERSION`): a number or any text (`"v2"`).
    pub fn version(mut self, version: impl fmt::Display) -> Self {
        self.config.version = version.to_string();
        self
    }

    /// Django's own key function, `{key_prefix}:{version}:{key}`.
    pub fn django_keys(mut self, key_prefix: impl Into<String>) -> Self {
        self.config.key_function = KeyFunctionKind::Django {
            key_prefix: key_prefix.into(),
        };
        self
    }

    /// A custom key function (django-newcache's `CACHE_KEY_MODULE`): any [`KeyFunction`],
    /// including a `Fn(&str) -> String` closure. Flavor and version are then its business.
    pub fn key_function(mut self, key_function: impl KeyFunction + 'static) -> Self {
        self.key_function = Some(Arc::new(key_function));
        self
    }

    /// The herd timeout in seconds (`CACHE_HERD_TIMEOUT`), default 60.
    pub fn herd_timeout(mut self, seconds: u32) -> Self {
        self.config.herd_timeout = seconds;
        self
    }

    /// The stale policy (`herd=` in the URL): [`Policy::Lease`] (the default: exactly one
    /// reader recomputes, claimed with CAS; needs CAS uniques, so libmemcached with
    /// `cas=false` is refused), [`Policy::Reinsert`] (django-newcache's exact, racy behaviour),
    /// [`Policy::Early`] (XFetch early recomputation on top of lease, beta from
    /// [`Builder::early_beta`]) or [`Policy::Meta`] (memcached 1.6's win flag, text transport
    /// only; lease from the first refused meta command on). No protection at all is
    /// [`Builder::herd`]`(false)` (`herd=off`); a policy of your own is
    /// [`Builder::stale_policy`].
    pub fn herd_policy(mut self, policy: Policy) -> Self {
        self.config.herd_policy = policy;
        self
    }

    /// XFetch's beta for [`Policy::Early`] (1.0 unless set; larger recomputes earlier).
    pub fn early_beta(mut self, beta: f64) -> Self {
        self.config.early_beta = beta;
        self
    }

    /// A stale policy of your own (any [`StalePolicy`]), in place of the built-in named by
    /// `herd=`.
    pub fn stale_policy(mut self, policy: impl StalePolicy + 'static) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// How long `get_or_set` callers wait for another process loading the same missing value.
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.config.lease_wait = wait;
        self
    }

    /// Herd protection by default (on unless turned off).
    pub fn herd(mut self, on: bool) -> Self {
        self.config.herd = on;
        self
    }

    /// The TTL of stores given [`Ttl::Default`] (300 s unless set).
    pub fn default_ttl(mut self, ttl: Ttl) -> Self {
        self.config.default_ttl = ttl;
        self
    }

    /// Connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Read timeout.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.config.read_timeout = timeout;
        self
    }

    /// Write timeout.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// Idle connections kept per server.
    pub fn max_idle_per_server(mut self, n: usize) -> Self {
        self.config.max_idle_per_server = n;
        self
    }

    /// Connections open at once per server (default 64; 0: no cap). Text transport.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// Connections per server of an `AsyncCache`'s text transport (default 1), shared by
    /// every task.
    pub fn async_connections(mut self, n: usize) -> Self {
        self.config.async_connections = n;
        self
    }

    /// Requests queued per connection of an `AsyncCache` before callers wait (default 1024).
    pub fn async_queue(mut self, n: usize) -> Self {
        self.config.async_queue = n;
        self
    }

    /// How long an idle connection is kept (default 60 s; zero: for ever). Text transport.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.config.idle_timeout = idle;
        self
    }

    /// The protocol the text transport speaks (default [`WireProtocol::Auto`]).
    pub fn protocol(mut self, protocol: WireProtocol) -> Self {
        self.config.protocol = protocol;
        self
    }

    /// The servers' item size limit (memcached's `-I`); larger values are refused unsent
    /// (after compression, when `compress_threshold` is set), and a refused `set` deletes the
    /// key's old value, as memcached does.
    pub fn item_size_limit(mut self, bytes: usize) -> Self {
        self.config.item_size_limit = bytes;
        self
    }

    /// Use the in-process memory transport (feature `memory`).
    pub fn memory(mut self) -> Self {
        self.config.transport = TransportKind::Memory;
        self
    }

    /// Use libmemcached (feature `binary`): its binary protocol when `binary`, else its text mode.
    pub fn libmemcached(mut self, binary: bool) -> Self {
        self.config.transport = TransportKind::Libmemcached { binary };
        self
    }

    /// Sets a libmemcached behavior by pylibmc's name (e.g. `("hash", "crc")`,
    /// `("ketama", "true")`, `("remove_failed", "1")`); checked when the cache is built. The
    /// text transport takes the placement, failover and timeout behaviors.
    pub fn behavior(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.behaviors.push((name.into(), value.into()));
        self
    }

    /// TLS to every server (text transport, feature `tls`), verified against the CA
    /// certificates in the PEM file `ca_file` (`tls=true&tls_ca=...` in the URL).
    pub fn tls(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.config.tls = true;
        self.config.tls_ca = Some(ca_file.into());
        self
    }

    /// A client certificate chain and its key (PEM files) for TLS servers that ask for one.
    pub fn tls_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.config.tls_cert = Some(cert_file.into());
        self.config.tls_key = Some(key_file.into());
        self
    }

    /// The name servers' TLS certificates must carry, instead of each one's configured host.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.config.tls_server_name = Some(name.into());
        self
    }

    /// SASL credentials (libmemcached binary mode).
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.config.username = Some(username.into());
        self.config.password = Some(Secret(password.into()));
        self
    }

    /// Use this transport instead of building one from the configuration (e.g. a wrapper).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Use this clock for soft expiries (tests inject a manual clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How structured values are serialized (default [`ValueCodec::Bincode`]; the codec's
    /// Cargo feature must be on).
    pub fn codec(mut self, codec: ValueCodec) -> Self {
        self.config.codec = codec;
        self
    }

    /// Store values of `bytes` or more zlib-compressed when that makes them smaller (as
    /// pylibmc's `min_compress_len`); values over the item size limit that compress below it
    /// can then be stored. Compressed values are read whatever this says.
    pub fn compress_threshold(mut self, bytes: usize) -> Self {
        self.config.compress_threshold = Some(bytes).filter(|n| *n > 0);
        self
    }

    /// The most a compressed value may inflate to when read (default 32 MiB).
    pub fn inflate_limit(mut self, bytes: usize) -> Self {
        self.config.inflate_limit = bytes;
        self
    }

    /// How herd-protected values are stored (default [`EnvelopeFormat::Newcache`]).
    pub fn envelope(mut self, envelope: EnvelopeFormat) -> Self {
        self.config.envelope = envelope;
        self
    }

    /// Builds the cache. Never blocks on a server: connections open on first use. Settings
    /// are checked first ([`Config::validate`]).
    pub fn build(self) -> Result<Cache> {
        self.config.validate()?;
        let custom = self.transport.is_some();
        let transport = match &self.transport {
            Some(t) => Arc::clone(t),
            None => build_transport(&self.config)?,
        };
        let core = self.core(transport.name(), transport.supports_meta(), custom)?;
        Ok(Cache::from_parts(core, transport))
    }

    /// Use this async transport for [`Builder::build_async`] instead of building one from the
    /// configuration (feature `tokio`).
    #[cfg(feature = "tokio")]
    pub fn async_transport(
        mut self,
        transport: Arc<dyn newcache_transport::AsyncTransport>,
    ) -> Self {
        self.async_transport = Some(transport);
        self
    }

    /// Builds an [`AsyncCache`](crate::AsyncCache) (feature `tokio`): the same settings, key
    /// function, herd policy and codec as [`Builder::build`]'s cache, over the text
    /// transport's async driver (its auto-pipelined connections, `async_connections` per
    /// server) or `transport=memory`. libmemcached's calls block a thread, so
    /// `transport=libmemcached` and `binary=true` are refused. Never blocks on a server.
    #[cfg(feature = "tokio")]
    pub fn build_async(self) -> Result<crate::AsyncCache> {
        self.config.validate()?;
        if self.transport.is_some() {
            return Err(bad(
                "Builder::transport takes a blocking transport, which an AsyncCache cannot drive; give it with Builder::async_transport",
            ));
        }
        let custom = self.async_transport.is_some();
        let transport = match &self.async_transport {
            Some(t) => Arc::clone(t),
            None => build_async_transport(&self.config)?,
        };
        let core = self.core(transport.name(), transport.supports_meta(), custom)?;
        Ok(crate::AsyncCache::from_parts(core, transport))
    }

    /// The cache apart from its transport, checked against what the transport can do.
    fn core(self, transport: &str, supports_meta: bool, custom_transport: bool) -> Result<Core> {
        let config = self.config;
        let key_function = self.key_function;
        // A transport or policy of the caller's own is taken as it is.
        let built_in = !custom_transport && self.policy.is_none();
        let policy: Arc<dyn StalePolicy> = match self.policy {
            Some(p) => p,
            None if config.herd_policy == Policy::Early => Arc::new(Xfetch {
                beta: config.early_beta,
            }),
            None => Arc::new(config.herd_policy),
        };
        if policy.server_side() && !supports_meta {
            return Err(bad(format_args!(
                "herd=meta needs memcached 1.6's meta protocol, which the {transport} transport does not speak; use the text transport, or herd=lease (single winner on any transport)"
            )));
        }
        if built_in {
            check_claims_can_cas(&config)?;
        }
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        Ok(Core::new(config, key_function, clock, policy))
    }
}

/// `herd=lease` (the default) and `herd=early` (lease at the expiry) claim a refresh with a
/// CAS store; libmemcached with `behaviors.cas=false` returns no CAS uniques, and without them
/// the single winner cannot be had (each stale read would fall back to the seed's racy
/// re-store). That combination is refused here rather than silently degraded; with herd off
/// (`herd=off`) the cache writes no envelopes and is let through.
fn check_claims_can_cas(config: &Config) -> Result<()> {
    let claims = matches!(config.herd_policy, Policy::Lease | Policy::Early);
    if config.herd && claims && libmemcached_without_cas(config) {
        return Err(bad(format_args!(
            "herd={} claims each refresh with CAS, but behaviors.cas=false turns CAS off in libmemcached; set behaviors.cas=true (the transport's default), or choose herd=reinsert (django-newcache's policy, which needs no CAS)",
            config.herd_policy.name()
        )));
    }
    Ok(())
}

/// True when the libmemcached transport is configured not to fetch CAS uniques.
#[cfg(feature = "binary")]
fn libmemcached_without_cas(config: &Config) -> bool {
    if !matches!(config.transport, TransportKind::Libmemcached { .. }) {
        return false;
    }
    let mut behaviors = newcache_transport_binary::Behaviors::default();
    for (name, value) in &config.behaviors {
        // Bad behaviors were refused when the transport was built.
        let _ = behaviors.set(name, value);
    }
    behaviors.cas == Some(false)
}

#[cfg(not(feature = "binary"))]
fn libmemcached_without_cas(_: &Config) -> bool {
    false
}

fn build_transport(config: &Config) -> Result<Arc<dyn Transport>> {
    match config.transport {
        TransportKind::Text => build_text(config),
        TransportKind::Memory => build_memory(config),
        TransportKind::Libmemcached { binary } => build_libmemcached(config, binary),
    }
}

fn check_behavior(transport: TransportKind, name: &str, value: &str) -> Result<()> {
    match transport {
        TransportKind::Libmemcached { .. } => check_libmemcached_behavior(name, value),
        TransportKind::Text => check_text_behavior(name, value),
        TransportKind::Memory => Err(bad(format_args!(
            "behaviors.{name}: behaviors configure a memcached client; the memory transport takes none"
        ))),
    }
}

#[cfg(feature = "binary")]
fn check_libmemcached_behavior(name: &str, value: &str) -> Result<()> {
    newcache_transport_binary::Behaviors::default()
        .set(name, value)
        .map_err(bad)
}

#[cfg(not(feature = "binary"))]
fn check_libmemcached_behavior(name: &str, _: &str) -> Result<()> {
    Err(bad(format_args!(
        "behaviors.{name}: libmemcached behaviors need the `binary` feature of newcache"
    )))
}

#[cfg(feature = "text")]
fn check_text_behavior(name: &str, value: &str) -> Result<()> {
    newcache_transport_text::TextConfig::default()
        .set_behavior(name, value)
        .map_err(|e| {
            bad(format_args!(
                "behaviors.{name} with the text transport: {e}"
            ))
        })
}

#[cfg(not(feature = "text"))]
fn check_text_behavior(name: &str, _: &str) -> Result<()> {
    Err(bad(format_args!(
        "behaviors.{name}: the text transport needs the `text` feature of newcache"
    )))
}

#[cfg(feature = "binary")]
fn build_libmemcached(config: &Config, binary: bool) -> Result<Arc<dyn Transport>> {
    use newcache_transport_binary::{Behaviors, BinaryConfig, BinaryTransport};
    // The cache's timeouts, unless behaviors name libmemcached's own.
    let mut behaviors = Behaviors {
        connect_timeout: Some(config.connect_timeout),
        poll_timeout: Some(config.read_timeout.max(config.write_timeout)),
        ..Behaviors::default()
    };
    for (name, value) in &config.behaviors {
        behaviors.set(name, value).map_err(bad)?;
    }
    let transport = BinaryTransport::new(BinaryConfig {
        servers: config.servers.clone(),
        binary_protocol: binary,
        behaviors,
        username: config.username.clone(),
        password: config.password.as_ref().map(|p| p.0.clone()),
        pool_size: config.max_idle_per_server.max(1),
        item_size_limit: config.item_size_limit,
    })?;
    Ok(Arc::new(transport))
}

#[cfg(not(feature = "binary"))]
fn build_libmemcached(_: &Config, binary: bool) -> Result<Arc<dyn Transport>> {
    Err(bad(format_args!(
        "{} asks for libmemcached, but this build of newcache lacks the `binary` feature; enable it in Cargo.toml (newcache = {{ features = [\"binary\"] }}); newcache never falls back to another transport silently",
        if binary { "binary=true" } else { "transport=libmemcached" }
    )))
}

#[cfg(feature = "text")]
fn build_text(config: &Config) -> Result<Arc<dyn Transport>> {
    let transport = newcache_transport_text::TextTransport::new(text_config(config)?)?;
    Ok(Arc::new(transport))
}

/// The text transport's settings, from the cache's (both drivers take them).
#[cfg(feature = "text")]
fn text_config(config: &Config) -> Result<newcache_transport_text::TextConfig> {
    use newcache_transport_text::TextConfig;
    let servers = config
        .servers
        .iter()
        .map(|s| parse_server(s))
        .collect::<Result<Vec<_>>>()?;
    let mut text = TextConfig {
        servers,
        connect_timeout: config.connect_timeout,
        read_timeout: config.read_timeout,
        write_timeout: config.write_timeout,
        max_idle_per_server: config.max_idle_per_server,
        item_size_limit: config.item_size_limit,
        max_connections: config.max_connections,
        async_connections: config.async_connections,
        async_queue: config.async_queue,
        idle_timeout: config.idle_timeout,
        protocol: match config.protocol {
            WireProtocol::Auto => newcache_transport_text::Protocol::Auto,
            WireProtocol::Meta => newcache_transport_text::Protocol::Meta,
            WireProtocol::Classic => newcache_transport_text::Protocol::Classic,
        },
        tls: match (config.tls, &config.tls_ca) {
            (true, Some(ca)) => Some(newcache_transport_text::TlsConfig {
                ca_file: ca.clone(),
                cert_file: config.tls_cert.clone(),
                key_file: config.tls_key.clone(),
                server_name: config.tls_server_name.clone(),
            }),
            (true, None) => return Err(bad("tls=true needs tls_ca")),
            (false, _) => None,
        },
        ..TextConfig::default()
    };
    for (name, value) in &config.behaviors {
        text.set_behavior(name, value).map_err(|e| {
            bad(format_args!(
                "behaviors.{name} with the text transport: {e}"
            ))
        })?;
    }
    Ok(text)
}

/// The async cache's transport: the text protocol's tokio driver, or the memory backend.
#[cfg(feature = "tokio")]
fn build_async_transport(config: &Config) -> Result<Arc<dyn newcache_transport::AsyncTransport>> {
    match config.transport {
        #[cfg(feature = "text")]
        TransportKind::Text => Ok(Arc::new(
            newcache_transport_text::TokioTextTransport::new(text_config(config)?)?,
        )),
        #[cfg(not(feature = "text"))]
        TransportKind::Text => Err(bad(
            "the text transport needs the `text` feature of newcache (on by default)",
        )),
        #[cfg(feature = "memory")]
        TransportKind::Memory => Ok(Arc::new(
            newcache_transport::MemoryTransport::with_item_size_limit(config.item_size_limit),
        )),
        #[cfg(not(feature = "memory"))]
        TransportKind::Memory => Err(bad(
            "transport=memory needs the `memory` feature of newcache",
        )),
        TransportKind::Libmemcached { .. } => Err(bad(
            "an AsyncCache cannot use libmemcached, whose calls block a thread; use the text transport (transport=text, the default: its async driver pipelines requests) or a blocking Cache",
        )),
    }
}

#[cfg(not(feature = "text"))]
fn build_text(_: &Config) -> Result<Arc<dyn Transport>> {
    Err(bad(
        "the text transport needs the `text` feature of newcache (on by default)",
    ))
}

#[cfg(feature = "memory")]
fn build_memory(config: &Config) -> Result<Arc<dyn Transport>> {
    Ok(Arc::new(
        newcache_transport::MemoryTransport::with_item_size_limit(config.item_size_limit),
    ))
}

#[cfg(not(feature = "memory"))]
fn build_memory(_: &Config) -> Result<Arc<dyn Transport>> {
    Err(bad(
        "transport=memory needs the `memory` feature of newcache",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_url_parses() {
        let c = Config::from_url(
            "newcache://127.0.0.1:11211;127.0.0.1:11212/?flavor=staging&version=2&herd_timeout=60&timeout=300&binary=false",
        )
        .unwrap();
        assert_eq!(c.servers, ["127.0.0.1:11211", "127.0.0.1:11212"]);
        assert_eq!(c.flavor, "staging");
        assert_eq!(c.version, "2");
        assert_eq!(c.herd_timeout, 60);
        assert_eq!(c.default_ttl, Ttl::Seconds(300));
        assert_eq!(c.transport, TransportKind::Text);
    }

    #[test]
    fn values_settings_parse_under_newcaches_and_pylibmcs_names() {
        let c = Config::from_url(
            "newcache://a/?version=v2&min_compress_len=1000&inflate_limit=4096&envelope=django-newcache&codec=pickle",
        )
        .unwrap();
        assert_eq!(c.version, "v2");
        assert_eq!(c.compress_threshold, Some(1000));
        assert_eq!(c.inflate_limit, 4096);
        assert_eq!(c.envelope, EnvelopeFormat::DjangoNewcache);
        assert_eq!(c.codec, ValueCodec::Pickle);
        let c = Config::from_url("newcache://a/?compress_threshold=0").unwrap();
        assert_eq!(c.compress_threshold, None, "0 turns compression off");
        let c = Config::from_url("newcache://a/").unwrap();
        assert_eq!(
            (c.compress_threshold, c.envelope),
            (None, EnvelopeFormat::Newcache)
        );
    }

    #[test]
    fn connection_settings_parse() {
        let c = Config::from_url("newcache://a/?max_connections=8&idle_timeout=5&protocol=classic")
            .unwrap();
        assert_eq!(c.max_connections, 8);
        assert_eq!(c.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.protocol, WireProtocol::Classic);
        let c = Config::from_url("newcache://a/").unwrap();
        assert_eq!(
            (c.max_connections, c.idle_timeout, c.protocol),
            (64, Duration::from_secs(60), WireProtocol::Auto)
        );
        for p in [
            WireProtocol::Auto,
            WireProtocol::Meta,
            WireProtocol::Classic,
        ] {
            let c = Config::from_url(&format!("newcache://a/?protocol={}", p.name())).unwrap();
            assert_eq!(c.protocol, p);
        }
        assert!(Config::from_url("newcache://a/?protocol=binary").is_err());
    }

    #[test]
    fn defaults_fill_what_the_url_leaves_out() {
        let c = Config::from_url("newcache://cache.internal").unwrap();
        assert_eq!(c.servers, ["cache.internal:11211"]);
        assert_eq!(
            c,
            Config {
                servers: c.servers.clone(),
                ..Config::default()
            }
        );
        let c = Config::from_url("newcache://[::1]:11300/").unwrap();
        assert_eq!(c.servers, ["[::1]:11300"]);
    }

    #[test]
    fn key_functions_transports_and_timeouts_are_chosen_by_url() {
        let c = Config::from_url(
            "newcache://a:1/?key_function=django&key_prefix=my%3Asite&transport=memory&timeout=forever&connect_timeout=100&read_timeout=200&write_timeout=300&herd=off",
        )
        .unwrap();
        assert_eq!(
            c.key_function,
            KeyFunctionKind::Django {
                key_prefix: "my:site".into()
            }
        );
        assert_eq!(c.transport, TransportKind::Memory);
        assert_eq!(c.default_ttl, Ttl::Forever);
        assert_eq!(c.connect_timeout, Duration::from_millis(100));
        assert_eq!(c.read_timeout, Duration::from_millis(200));
        assert_eq!(c.write_timeout, Duration::from_millis(300));
        assert!(!c.herd);
        let c = Config::from_url("newcache://a/?herd=reinsert&lease_wait=250").unwrap();
        assert_eq!((c.herd, c.herd_policy), (true, Policy::Reinsert));
        assert_eq!(c.lease_wait, Duration::from_millis(250));
        assert_eq!(
            Config::from_url("newcache://a/").unwrap().herd_policy,
            Policy::Lease
        );
        assert!(Config::from_url("newcache://a/?herd=maybe").is_err());
        let c = Config::from_url("newcache://a/?herd=early&early_beta=2.5").unwrap();
        assert_eq!((c.herd_policy, c.early_beta), (Policy::Early, 2.5));
        assert!(Config::from_url("newcache://a/?early_beta=-1").is_err());
        let c = Config::from_url("newcache://a/?binary=true").unwrap();
        assert_eq!(c.transport, TransportKind::Libmemcached { binary: true });
        let c = Config::from_url("newcache://a/?transport=libmemcached").unwrap();
        assert_eq!(c.transport, TransportKind::Libmemcached { binary: false });
        let c = Config::from_url("newcache:///?transport=memory").unwrap();
        assert!(c.servers.is_empty());
    }

    #[test]
    fn unknown_repeated_or_malformed_parameters_are_errors() {
        for (url, needle) in [
            ("memcached://a/", "newcache://"),
            ("newcache://a/?flavour=x", "unknown parameter \"flavour\""),
            ("newcache://a/?version=1&version=2", "twice"),
            ("newcache://a/?timeout", "no value"),
            ("newcache://a/?binary=maybe", "binary"),
            ("newcache://a:99999/", "port"),
            ("newcache://a:0/", "port"),
            ("newcache://[]:1", "not an IPv6 address"),
            ("newcache://[::1]x/", "expected :port"),
            ("newcache://bad%20host/", "not a host name"),
            ("newcache://a b:1/", "not a host name"),
            ("newcache:///", "names no server"),
            ("newcache://a/?transport=udp", "transport"),
            ("newcache://a/?key_function=md5", "key_function"),
            ("newcache://a/?key_prefix=x", "key_prefix"),
            (
                "newcache://a/?behaviors.buffer_requests=true",
                "buffer_requests",
            ),
            ("newcache://a/?behaviors.ketama=maybe", "ketama"),
            (
                "newcache://a/?transport=memory&behaviors.ketama=1",
                "memory",
            ),
            ("newcache://a/?binary=true&behaviors.nonsense=1", "nonsense"),
            ("newcache://a/?binary=true&username=u", "both"),
            (
                "newcache://a/?transport=libmemcached&username=u&password=p",
                "binary=true",
            ),
            ("newcache://a:1:0/", "weight"),
            ("newcache://a/?flavor=%zz", "percent"),
            ("newcache://a/path?x=1", "path"),
            ("newcache://a/?binary=true&transport=memory", "binary=true"),
            ("newcache://a;;b/", "empty server entry"),
            ("newcache://a;b;/", "empty server entry"),
            ("newcache://a/?connect_timeout=0", "connect_timeout is zero"),
            ("newcache://a/?read_timeout=0", "read_timeout is zero"),
            ("newcache://a/?write_timeout=0", "write_timeout is zero"),
            ("newcache://a/?timeout=0", "timeout=forever"),
            ("newcache://a/?herd_timeout=0", "herd=off"),
            (
                "newcache://a/?flavor=two%20words",
                "this flavor or version makes every key invalid",
            ),
            (
                "newcache://a/?flavor=tab%09",
                "this flavor or version makes every key invalid",
            ),
            (
                "newcache://a/?key_function=django&key_prefix=a%20b",
                "this key_prefix or version makes every key invalid",
            ),
            (
                "newcache://a/?codec=yaml",
                "codec=\"yaml\": use bincode, json or pickle",
            ),
            ("newcache://a/?envelope=seed", "envelope=\"seed\""),
            ("newcache://a/?compress_threshold=x", "compress_threshold"),
            (
                "newcache://a/?compress_threshold=1&min_compress_len=2",
                "not both",
            ),
        ] {
            let err = Config::from_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
        // Turning herd protection off makes a zero herd timeout harmless.
        assert!(Config::from_url("newcache://a/?herd=off&herd_timeout=0").is_ok());
    }

    #[test]
    fn the_builder_is_checked_as_the_url_is() {
        let built = |b: crate::Builder| b.build().map(drop).unwrap_err().to_string();
        let base = || crate::Builder::new().servers(["127.0.0.1:1"]);
        assert!(built(base().connect_timeout(Duration::ZERO)).contains("connect_timeout is zero"));
        assert!(built(base().read_timeout(Duration::ZERO)).contains("read_timeout is zero"));
        assert!(built(base().default_ttl(Ttl::Seconds(0))).contains("timeout=forever"));
        assert!(built(base().herd_timeout(0)).contains("herd=off"));
        assert!(built(base().flavor("a b")).contains("flavor or version makes every key invalid"));
        assert!(built(base().django_keys("x\ny"))
            .contains("key_prefix or version makes every key invalid"));
    }

    #[test]
    fn the_codec_is_chosen_by_url_and_builder() {
        assert_eq!(
            Config::from_url("newcache://a/").unwrap().codec,
            ValueCodec::default()
        );
        let json = Config::from_url("newcache://a/?codec=json");
        if cfg!(feature = "json") {
            assert_eq!(json.unwrap().codec, ValueCodec::Json);
        } else {
            let err = json.unwrap_err().to_string();
            assert!(err.contains("`json` feature"), "{err}");
        }
        assert_eq!(
            crate::Builder::new().codec(ValueCodec::Json).config().codec,
            ValueCodec::Json
        );
    }

    #[cfg(feature = "text")]
    #[test]
    fn the_text_transport_takes_placement_and_failover_behaviors_and_weights() {
        let cache = crate::Builder::from_url(
            "newcache://a:11211:2;b:11212/?behaviors.ketama=true&behaviors.remove_failed=1&behaviors.retry_timeout=1",
        )
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(cache.transport().name(), "text");
    }

    #[cfg(feature = "binary")]
    #[test]
    fn behaviors_and_credentials_are_parsed_for_libmemcached() {
        let c = Config::from_url(
            "newcache://a:11211:2;b/?binary=true&behaviors.ketama=true&behaviors.hash=md5&username=u&password=p%40ss",
        )
        .unwrap();
        assert_eq!(c.servers, ["a:11211:2", "b:11211"]);
        assert_eq!(
            c.behaviors,
            [
                ("ketama".to_string(), "true".to_string()),
                ("hash".into(), "md5".into())
            ]
        );
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password, Some(Secret("p@ss".into())));
        assert!(!format!("{c:?}").contains("p@ss"));
        let err = Config::from_url("newcache://a/?binary=true&behaviors.hash=sha9").unwrap_err();
        assert!(err.to_string().contains("hash"), "{err}");
    }

    #[cfg(not(feature = "binary"))]
    #[test]
    fn binary_without_the_feature_is_a_clear_error_not_a_fallback() {
        let err = Builder::from_url("newcache://127.0.0.1:1/?binary=true")
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`binary` feature"), "{err}");
    }
}
