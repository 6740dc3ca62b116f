//! Configuration: the `newcache://` URL and the [`Builder`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use newcache_herd::{Policy, Ttl, DEFAULT_HERD_TIMEOUT};
use newcache_transport::DEFAULT_ITEM_SIZE_LIMIT;

use crate::codec::ValueCodec;
use crate::error::Error;

mod builder;
mod transports;
mod url;
mod validate;

pub use builder::Builder;

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
    /// caches of one process. Never part of a key. The caches of a process with one name,
    /// transport and placement on the same servers share `get_or_set`'s single flights (one
    /// loader per process; a `Cache` and an `AsyncCache` each have their own).
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
    /// How long `get_or_set` callers wait for the one loading a missing value (`lease_wait`,
    /// ms), default 3 s, at least 1 ms. Callers in this process read the key again every
    /// `lease_wait`; callers in other processes run the loader themselves once the loader's
    /// lease key expires: `lease_wait` rounded up to whole seconds, and one second more
    /// (memcached's clock counts whole seconds), after it was taken.
    pub lease_wait: Duration,
    /// TTL of stores given [`Ttl::Default`], default 300 s.
    pub default_ttl: Ttl,
    /// The transport.
    pub transport: TransportKind,
    /// Connect timeout, default 250 ms.
    pub connect_timeout: Duration,
    /// Read timeout, default 500 ms. libmemcached (`transport=libmemcached`,
    /// `binary=true`) has one poll timeout for reads and writes: the larger of this and
    /// `write_timeout` (so `read_timeout=300` alone waits up to the default 500 ms there;
    /// lower both).
    pub read_timeout: Duration,
    /// Write timeout, default 500 ms (see `read_timeout` for libmemcached).
    pub write_timeout: Duration,
    /// Idle connections kept per server, default 16. The blocking text transport's pool;
    /// `AsyncCache`'s connections (`async_connections`, or on servers without meta up to
    /// `max_connections`, one request at a time each) stay open until `idle_timeout`.
    pub max_idle_per_server: usize,
    /// Connections open at once per server (`max_connections`), default 64; callers wait
    /// for one up to the read timeout. 0: no cap. The libmemcached transports keep this
    /// many handles (each with at most one connection per server), made as callers need
    /// them and kept. An `AsyncCache` keeps to it on servers that speak only the classic
    /// protocol and over TLS (one request at a time per connection), up to 1,024 (0:
    /// 1,024); on the others it opens `async_connections`.
    pub max_connections: usize,
    /// Idle connections are closed after this long (`idle_timeout`, seconds), default 60 s.
    /// Text and libmemcached transports, and `AsyncCache`.
    pub idle_timeout: Duration,
    /// Connections per server of an [`AsyncCache`](crate::AsyncCache)'s text transport
    /// (`async_connections`), default 1, at most 1,024: in the meta protocol every task's
    /// requests share them, written together (classic and TLS connections carry one request
    /// at a time, up to `max_connections`).
    pub async_connections: usize,
    /// Requests queued per connection of an `AsyncCache` before callers wait for room
    /// (`async_queue`), default 1024, at most 1,048,576.
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
    #[cfg(feature = "pickle")]
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
            "newcache:///?key_function=django&key_prefix=my%3Asite&transport=memory&timeout=forever&connect_timeout=100&read_timeout=200&write_timeout=300&herd=off",
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
            ("newcache://::1:11211/", "goes in brackets"),
            ("newcache://fe80::1/", "goes in brackets"),
            (
                "newcache://2001:db8:0:0:0:0:0:1:11211:2/",
                "goes in brackets",
            ),
            ("newcache://h:1:2:3/", "weight"),
            ("newcache://bad%20host/", "not a host name"),
            ("newcache://a b:1/", "not a host name"),
            ("newcache:///", "names no server"),
            ("newcache://a/?transport=udp", "transport"),
            ("newcache://a/?key_function=md5", "key_function"),
            ("newcache://a/?key_prefix=x", "key_prefix"),
            // A setting the chosen key function or transport does not take was dropped
            // without a word (an outside audit).
            (
                "newcache://a/?key_function=django&flavor=staging",
                "give key_prefix instead of flavor",
            ),
            ("newcache://a/?name=%0A", "only spaces and line breaks"),
            #[cfg(feature = "binary")]
            (
                "newcache://a/?transport=libmemcached&max_idle=1",
                "max_idle is the text transport's setting",
            ),
            #[cfg(feature = "binary")]
            (
                "newcache://a/?binary=true&protocol=meta",
                "protocol is the text transport's setting",
            ),
            #[cfg(feature = "binary")]
            (
                "newcache://a/?binary=true&async_connections=2",
                "async_connections is the text transport's setting",
            ),
            #[cfg(feature = "binary")]
            (
                "newcache://a/?transport=libmemcached&async_queue=8",
                "async_queue is the text transport's setting",
            ),
            (
                "newcache://a/?behaviors.buffer_requests=true",
                "buffer_requests",
            ),
            ("newcache://a/?behaviors.ketama=maybe", "ketama"),
            ("newcache:///?transport=memory&behaviors.ketama=1", "memory"),
            ("newcache://a/?binary=true&behaviors.nonsense=1", "nonsense"),
            (
                "newcache://a/?binary=true&behaviors.buffer_requests=1",
                "buffer_requests",
            ),
            #[cfg(feature = "binary")]
            (
                "newcache://a/?binary=true&behaviors.connect_timeout=0",
                "at least 1 ms",
            ),
            ("newcache://a/?binary=true&username=u", "both"),
            (
                "newcache://a/?transport=libmemcached&username=u&password=p",
                "binary=true",
            ),
            ("newcache://a:1:0/", "weight"),
            ("newcache://a:1:70000;b:1:1/", "from 1 to 65535"),
            ("newcache://a/?name=", "name is empty"),
            ("newcache://a/?behaviors.connect_timeout=0", "from 1"),
            ("newcache://a/?behaviors._poll_timeout=0", "from 1"),
            ("newcache://a/?flavor=%zz", "percent"),
            ("newcache://a/path?x=1", "path"),
            ("newcache://a/?binary=true&transport=memory", "binary=true"),
            (
                "newcache://127.0.0.1:11211/?transport=memory",
                "talks to no server",
            ),
            ("newcache://u:hunter2@h/", "credentials before the host"),
            ("newcache://a;;b/", "empty server entry"),
            ("newcache://a;b;/", "empty server entry"),
            ("newcache://a/?connect_timeout=0", "connect_timeout is zero"),
            ("newcache://a/?read_timeout=0", "read_timeout is zero"),
            ("newcache://a/?write_timeout=0", "write_timeout is zero"),
            ("newcache://a/?timeout=0", "timeout=forever"),
            (
                "newcache://a/?timeout=99999999999",
                "past what memcached can be told",
            ),
            ("newcache://a/?herd_timeout=0", "herd=off"),
            ("newcache://a/?item_size_limit=0", "item_size_limit=0"),
            ("newcache://a/?name=x#frag", "has a fragment"),
            ("newcache://a/#frag", "has a fragment"),
            (
                "newcache://a/?binary=true&username=&password=hunter2",
                "username is empty",
            ),
            (
                "newcache://a/?binary=true&read_timeout=3000000",
                "read_timeout=3000000 ms is over what libmemcached takes",
            ),
            (
                "newcache://a/?transport=libmemcached&connect_timeout=2147484",
                "connect_timeout=2147484 ms is over",
            ),
            ("newcache://a/?early_beta=-1", "must be a positive number"),
            (
                "newcache://a/?read_timeout=18446744073709551615",
                "is over a day",
            ),
            (
                "newcache://a/?lease_wait=18446744073709551615",
                "lease_wait=18446744073709551615 ms is over a day",
            ),
            ("newcache://a/?lease_wait=0", "lease_wait=0ns would have"),
            #[cfg(feature = "pickle")]
            (
                "newcache://a/?envelope=django-newcache",
                "needs codec=pickle (this cache has codec=bincode)",
            ),
            #[cfg(all(feature = "pickle", feature = "json"))]
            (
                "newcache://a/?envelope=django-newcache&codec=json",
                "needs codec=pickle",
            ),
            ("newcache://a/?early_beta=2", "no effect under herd=lease"),
            (
                "newcache://a/?connect_timeout=7&behaviors.connect_timeout=5",
                "both set the same timeout",
            ),
            (
                "newcache://a/?read_timeout=70&behaviors._poll_timeout=50",
                "both set the same timeout",
            ),
            (
                "newcache:///?binary=true&username=u&password=hunter2",
                "names no server",
            ),
            (
                "memcached://h/?binary=true&username=u&password=hunter2",
                "must start with newcache://",
            ),
            (
                "newcache://h/?binary=true&username=u&password=hunter2%zz",
                "password: bad percent-escape",
            ),
            // Credentials before the host, in another scheme or beside a fragment, were
            // shown whole.
            (
                "memcached://admin:hunter2@127.0.0.1:23541/",
                "URL \"(not shown: it holds credentials before the host)\" must start with newcache://",
            ),
            ("redis://:hunter2@h", "must start with newcache://"),
            ("newcache://admin:hunter2@h/#x", "has a fragment"),
            // A '?' in the password split it off as the query: the rest was shown.
            (
                "memcached://admin:hun?ter2@127.0.0.1/",
                "must start with newcache://",
            ),
            ("redis://:hun?ter2@h", "must start with newcache://"),
            (
                "newcache://admin:hun?ter2@127.0.0.1/",
                "credentials before the host",
            ),
            // A '/?' in the password (a review), or a '=' in it.
            ("newcache://admin:se/?cret2@h/", "credentials before the host"),
            ("memcached://admin:se/?cret2@h/", "must start with newcache://"),
            ("newcache://u:p=w?ter2@h/", "credentials before the host"),
            // A '?' in the password followed by name=value (a review), a literal '&'.
            ("newcache://admin:hunter2?a=b@127.0.0.1/", "credentials before the host"),
            ("newcache://admin:hun?ter=2@h/", "credentials before the host"),
            ("newcache://admin:hun&ter2?x=y@h/", "credentials before the host"),
            ("memcached://admin:hun?ter=2@h/", "must start with newcache://"),
            ("redis://:pw?x=hunter2@h", "must start with newcache://"),
            ("newcache://admin:hunter2?a=b@h/#x", "has a fragment"),
            ("newcache://h/?binary=true&username=u&password=hun&ter2", "not shown"),
            ("newcache://h/?binary=true&username=u&password=hun&ter2=x", "not shown"),
            // Another scheme, or a fragment: the error shows the URL without the password
            // and without what follows it, which may be a part of it (`&` in a password:
            // an outside audit saw `password=***&ter2`).
            (
                "memcached://h/?binary=true&username=u&password=hun&ter2",
                "must start with newcache://",
            ),
            ("redis://h/?password=hun&ter2", "must start with newcache://"),
            ("memcached://h/?password=hun&ter2=x", "must start with newcache://"),
            (
                "newcache://h/?binary=true&username=u&password=hun&ter2#frag",
                "has a fragment",
            ),
            // After a password, a known parameter's bad value may be the rest of it (a
            // review: `timeout="ter2"` was shown).
            ("newcache://h:1/?password=hun&timeout=ter2", "after password="),
            ("newcache://h:1/?password=hun&binary=ter2", "after password="),
            ("newcache://h:1/?password=hun&name=%ZZter2", "after password="),
            ("newcache://h:1/?x=1#password=hunter2", "has a fragment"),
            ("http://h/?PASSWORD=hunter2", "must start with newcache://"),
            ("newcache://h/?binary=true&username=u&password=hunter2%ff", "not UTF-8"),
            ("newcache://a/?herd_timeout=16382", "is over 16381 s"),
            (
                "newcache://a/?herd_timeout=99999999999",
                "herd_timeout=99999999999 is too large",
            ),
            ("newcache://a/?herd_timeout=9x", "is not a valid number"),
            (
                "newcache://a/?herd=off&herd_timeout=1209600",
                "is over 16381 s",
            ),
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
            assert!(!err.contains("hunter2"), "the password is shown: {err}");
            assert!(
                !err.contains("ter2") && !err.contains(":hun") && !err.contains(":se"),
                "a part of the password is shown: {err}"
            );
        }
        // Turning herd protection off makes a zero herd timeout harmless.
        assert!(Config::from_url("newcache://a/?herd=off&herd_timeout=0").is_ok());
    }

    /// A query parameter's value may hold an '@' (a SASL user name), with or without a '/'
    /// before the '?': refused as credentials before the host, with the password shown (a
    /// review).
    #[test]
    fn an_at_sign_in_a_parameter_value_is_no_credentials() {
        for url in [
            "newcache://cache.internal?username=ops@corp&password=hunter2&binary=true",
            "newcache://cache.internal/?username=ops@corp&password=hunter2&binary=true",
            "newcache://a;b:11212?password=p@ss&username=u&binary=true",
        ] {
            let config = Config::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                config.username.as_deref(),
                Some(if url.contains("ops@corp") {
                    "ops@corp"
                } else {
                    "u"
                })
            );
        }
    }

    #[test]
    fn the_builder_is_checked_as_the_url_is() {
        let built = |b: crate::Builder| b.build().map(drop).unwrap_err().to_string();
        let base = || crate::Builder::new().servers(["127.0.0.1:1"]);
        assert!(built(base().connect_timeout(Duration::ZERO)).contains("connect_timeout is zero"));
        assert!(built(base().read_timeout(Duration::ZERO)).contains("read_timeout is zero"));
        assert!(built(base().default_ttl(Ttl::Seconds(0))).contains("timeout=forever"));
        // It was kept: every default-TTL store never expired, with no herd state.
        assert!(built(base().default_ttl(Ttl::Default)).contains("cannot be Ttl::Default"));
        // Credentials are checked as the URL checks them (an empty user name was taken).
        let sasl = || base().libmemcached(true);
        assert!(built(sasl().credentials("", "pw")).contains("username is empty"));
        let e = built(sasl().credentials("u", "hunter2\0"));
        assert!(e.contains("NUL byte") && !e.contains("hunter2"), "{e}");
        let mut config = Config::from_url("newcache://a/?binary=true").unwrap();
        config.username = Some("u".into());
        assert!(built(crate::Builder::from_config(config)).contains("give both"));
        assert!(built(base().herd_timeout(0)).contains("herd=off"));
        assert!(built(base().flavor("a b")).contains("flavor or version makes every key invalid"));
        assert!(built(base().django_keys("x\ny"))
            .contains("key_prefix or version makes every key invalid"));
        // The built-in key function's settings beside another key function were dropped.
        assert!(built(base().django_keys("p").flavor("x")).contains("instead of flavor"));
        let own = |key: &str| format!("mine:{key}");
        assert!(built(base().flavor("x").key_function(own)).contains("drop flavor"));
        assert!(built(base().django_keys("p").key_function(own)).contains("give one"));
        assert!(built(base().version(2).key_function(own)).contains("drop version"));
        assert!(base().key_function(own).build().is_ok());
        // What the URL refuses while parsing, the builder refused nowhere (an outside audit):
        // credentials without libmemcached's binary protocol, behaviors the transport does
        // not take, an XFetch beta that is not a positive number, zero size limits.
        assert!(built(base().credentials("u", "pw")).contains("SASL"));
        // A password before the host is refused without being shown.
        let e = built(crate::Builder::new().servers(["u:hunter2@h"]));
        assert!(
            e.contains("<credentials>@h") && !e.contains("hunter2"),
            "{e}"
        );
        // A timeout given twice, by newcache's name and by libmemcached's behavior.
        assert!(built(
            base()
                .read_timeout(Duration::from_millis(2000))
                .behavior("_poll_timeout", "100")
        )
        .contains("both set the same timeout"));
        for beta in [f64::NAN, -1.0, 0.0, f64::INFINITY] {
            assert!(
                built(base().early_beta(beta)).contains("early_beta"),
                "{beta}"
            );
        }
        assert!(built(base().herd_timeout(16_382)).contains("is over 16381 s"));
        assert!(built(base().behavior("bogus", "x")).contains("bogus"));
        assert!(built(base().item_size_limit(0)).contains("item_size_limit=0"));
        assert!(built(base().inflate_limit(0)).contains("inflate_limit=0"));
        #[cfg(feature = "memory")]
        assert!(
            built(crate::Builder::new().memory().behavior("ketama", "true"))
                .contains("the memory transport takes none")
        );
        // Servers given with the memory transport would be ignored: refused.
        #[cfg(feature = "memory")]
        assert!(
            built(crate::Builder::new().servers(["cache1:11211"]).memory())
                .contains("talks to no server")
        );
        #[cfg(feature = "memory")]
        assert!(crate::Builder::new().memory().build().is_ok());
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

    /// What the async cache cannot take is refused as a setting, naming what to use
    /// (libmemcached); TLS it takes, its files checked when it is built as `Cache` checks
    /// them (a CA file that holds no certificate is a configuration error naming it).
    #[cfg(all(feature = "tokio", feature = "tls", feature = "binary"))]
    #[test]
    fn an_async_cache_refuses_libmemcached_and_checks_tls_files_as_settings() {
        let ca = std::env::temp_dir().join(format!(
            "newcache-async-tls-test-ca-{}.pem",
            std::process::id()
        ));
        std::fs::write(&ca, "not read").unwrap();
        for (url, says) in [
            (
                format!("newcache://a/?tls=true&tls_ca={}", ca.display()),
                ca.display().to_string(),
            ),
            (
                "newcache://a/?transport=libmemcached".to_string(),
                "blocking Cache".to_string(),
            ),
        ] {
            let err = crate::Builder::from_url(&url)
                .unwrap()
                .build_async()
                .unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains(&says)),
                "{url}: {err:?}"
            );
        }
        std::fs::remove_file(&ca).unwrap();
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
