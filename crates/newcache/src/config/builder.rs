//! [`Builder`]: every URL setting as a method, plus what a URL cannot carry (a custom key
//! function, transport, clock or stale policy).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use newcache_herd::{Clock, Policy, StalePolicy, SystemClock, Ttl, Xfetch};
use newcache_keyfn::KeyFunction;
use newcache_transport::Transport;

#[cfg(feature = "tokio")]
use super::transports::build_async_transport;
use super::transports::build_transport;
use super::validate::check_claims_can_cas;
use super::{bad, Config, EnvelopeFormat, KeyFunctionKind, Secret, TransportKind, WireProtocol};
use crate::codec::ValueCodec;
use crate::error::Result;
use crate::ops::Core;
use crate::Cache;

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

    /// The key flavor (django-newcache's `FLAVOR`), for the newcache key function (the
    /// default): building refuses it beside [`django_keys`](Builder::django_keys) (Django's
    /// keys take a prefix instead) or a key function of your own.
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
    /// including a `Fn(&str) -> String` closure. Flavor and version are then its business:
    /// building refuses a [`flavor`](Builder::flavor), a [`version`](Builder::version) or
    /// [`django_keys`](Builder::django_keys) given beside it (they would be dropped).
    pub fn key_function(mut self, key_function: impl KeyFunction + 'static) -> Self {
        self.key_function = Some(Arc::new(key_function));
        self
    }

    /// The herd timeout in seconds (`CACHE_HERD_TIMEOUT`), default 60; at most
    /// [`MAX_HERD_TIMEOUT`](newcache_herd::MAX_HERD_TIMEOUT) (16381 s), or building fails.
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

    /// The TTL of stores given [`Ttl::Default`] (300 s unless set): `Ttl::Seconds(n)` with
    /// `n` above 0, or `Ttl::Forever` (`Ttl::Default` itself is refused when building).
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

    /// Idle connections kept per server (default 16): the blocking text transport's pool
    /// (`AsyncCache`'s connections stay open until `idle_timeout`).
    pub fn max_idle_per_server(mut self, n: usize) -> Self {
        self.config.max_idle_per_server = n;
        self
    }

    /// Connections open at once per server (default 64; 0: no cap); the libmemcached
    /// transports' number of pooled handles, each with at most one connection per server.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// Connections per server of an `AsyncCache`'s text transport (default 1, at most
    /// 1,024), shared by every task.
    pub fn async_connections(mut self, n: usize) -> Self {
        self.config.async_connections = n;
        self
    }

    /// Requests queued per connection of an `AsyncCache` before callers wait (default 1024,
    /// at most 1,048,576).
    pub fn async_queue(mut self, n: usize) -> Self {
        self.config.async_queue = n;
        self
    }

    /// How long an idle connection is kept (default 60 s; zero: for ever), on every
    /// transport (libmemcached's: an idle handle is dropped with its connections).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.config.idle_timeout = idle;
        self
    }

    /// The protocol the text transport speaks (default [`WireProtocol::Auto`]).
    pub fn protocol(mut self, protocol: WireProtocol) -> Self {
        self.config.protocol = protocol;
        self
    }

    /// The servers' item size limit (memcached's `-I`); a value whose item would be larger
    /// (the value after compression, when `compress_threshold` is set, plus the wire key
    /// and memcached's item header, [`Store::value_limit`]) is refused unsent, and a refused
    /// `set` deletes the key's old value, as memcached does.
    ///
    /// [`Store::value_limit`]: crate::transport::Store::value_limit
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

    /// Use this clock for soft expiries (tests inject a manual clock). A TTL past 30 days,
    /// which memcached takes as a Unix time, is counted from the system's clock all the
    /// same: memcached's own clock follows it.
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
        // The built-in key function's settings beside a key function of the caller's own
        // were dropped without a word: a flavor meant to keep environments apart kept
        // nothing apart (an outside audit).
        if key_function.is_some() {
            if config.key_function != KeyFunctionKind::Newcache {
                return Err(bad(
                    "Builder::key_function and django_keys (key_function=django) both choose the key function; give one",
                ));
            }
            if !config.flavor.is_empty() {
                return Err(bad(
                    "flavor is the built-in key function's; a key function of your own (Builder::key_function) makes the whole key, flavor included: drop flavor",
                ));
            }
            if config.version != Config::default().version {
                return Err(bad(
                    "version is the built-in key function's; a key function of your own (Builder::key_function) makes the whole key, version included: drop version, or put it in your key function",
                ));
            }
        }
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
            return Err(
                if !custom_transport && config.transport == TransportKind::Text {
                    bad("herd=meta needs memcached 1.6's meta protocol, which protocol=classic turns off; drop protocol=classic (auto finds meta where the servers speak it), or use herd=lease (single winner on any protocol)")
                } else {
                    bad(format_args!(
                    "herd=meta needs memcached 1.6's meta protocol, which the {transport} transport does not speak; use the text transport, or herd=lease (single winner on any transport)"
                ))
                },
            );
        }
        if built_in {
            check_claims_can_cas(&config)?;
        }
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        // The servers' data is shared by every cache of the process on them, and so are the
        // single flights of the caches of one name, one transport and one placement (the
        // behaviors: another distribution puts the same wire key on another server, and a
        // wait on its flight was a wait on another item, a review). A blocking cache and an
        // async one keep theirs apart: a blocking follower on a runtime's thread stalled the
        // async leader it waited for (a review: a current-thread runtime never woke). A
        // memory transport's, or a caller's own, is the cache's alone.
        let cluster = (!custom_transport
            && config.transport != TransportKind::Memory
            && !config.servers.is_empty())
        .then(|| {
            let mut behaviors = config.behaviors.clone();
            behaviors.sort();
            format!(
                "{}\n{transport}\n{}\n{behaviors:?}",
                config.name,
                config.servers.join("\n")
            )
        });
        let mut core = Core::new(config, key_function, clock, policy);
        if let Some(cluster) = cluster {
            core.flights = crate::read_through::flights_of(&cluster);
        }
        Ok(core)
    }
}
