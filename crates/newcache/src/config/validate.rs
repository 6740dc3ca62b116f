//! Whether settings make sense together ([`Config::validate`]), checked the same for a URL
//! and a [`Builder`](super::Builder), and the built-in key function they name.

use std::sync::Arc;
use std::time::Duration;

use newcache_herd::{Policy, Ttl};
use newcache_keyfn::{HashedKey, KeyFunction, PrefixedKey};

use super::{bad, Config, EnvelopeFormat, KeyFunctionKind, TransportKind};
use crate::codec::ValueCodec;
use crate::error::Result;

impl Config {
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
    /// [`Builder`](super::Builder)): every I/O timeout is at least 1 ms, the default TTL is not zero (that
    /// would make every default store a delete), the herd timeout is not zero while herd
    /// protection is on and at most [`MAX_HERD_TIMEOUT`](newcache_herd::MAX_HERD_TIMEOUT),
    /// XFetch's beta is a positive number, the size limits are not zero, every behavior is one
    /// the transport takes, SASL credentials come with libmemcached's binary protocol, the
    /// codec is compiled in, and the built-in key function makes valid keys with this flavor
    /// or prefix.
    pub fn validate(&self) -> Result<()> {
        let defaults = Config::default();
        if self.name.trim().is_empty() {
            // It labels every metric and span (`cache=""` told no one which cache it was).
            return Err(bad(
                "name is empty or only spaces and line breaks; give the cache a name for its metrics and traces, or leave name= out for the default (default)",
            ));
        }
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
        // Past a day a timeout is a mistake (u64::MAX ms hung a get for ever), and the
        // lease's wait is sent as a relative exptime, which memcached reads as an absolute
        // date past 30 days.
        const DAY: Duration = Duration::from_secs(86_400);
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
            ("lease_wait", self.lease_wait),
        ] {
            if value > DAY {
                return Err(bad(format_args!(
                    "{name}={} ms is over a day ({} ms); give the longest wait that makes sense for one request",
                    value.as_millis(),
                    DAY.as_millis()
                )));
            }
        }
        // In-process waiters read the key again every `lease_wait`: zero made a cold load a
        // busy loop against memcached (38,456 gets in half a second: an outside audit).
        if self.lease_wait < Duration::from_millis(1) {
            return Err(bad(format_args!(
                "lease_wait={:?} would have waiting callers read the key without pause; give at least 1 ms (the default is 3000)",
                self.lease_wait
            )));
        }
        if let TransportKind::Libmemcached { .. } = self.transport {
            // libmemcached keeps its socket timeouts in microseconds, in 32 bits.
            const MOST: Duration = Duration::from_micros(i32::MAX as u64);
            for (name, timeout) in [
                ("connect_timeout", self.connect_timeout),
                ("read_timeout", self.read_timeout),
                ("write_timeout", self.write_timeout),
            ] {
                if timeout > MOST {
                    return Err(bad(format_args!(
                        "{name}={} ms is over what libmemcached takes ({} ms: it keeps its socket timeouts in microseconds, in 32 bits); give a shorter one",
                        timeout.as_millis(),
                        MOST.as_millis()
                    )));
                }
            }
        }
        if let TransportKind::Libmemcached { .. } = self.transport {
            // The text transport's own settings: libmemcached took them and did nothing
            // (an outside audit: max_idle=1 kept 8 idle connections).
            for (name, changed) in [
                (
                    "max_idle",
                    self.max_idle_per_server != defaults.max_idle_per_server,
                ),
                ("protocol", self.protocol != defaults.protocol),
                (
                    "async_connections",
                    self.async_connections != defaults.async_connections,
                ),
                ("async_queue", self.async_queue != defaults.async_queue),
            ] {
                if changed {
                    return Err(bad(format_args!(
                        "{name} is the text transport's setting, which libmemcached does not take (its pool is max_connections handles, its protocol binary=true or not, and an AsyncCache runs on the text transport); drop {name}, or use transport=text"
                    )));
                }
            }
        }
        if self.async_connections == 0 || self.async_queue == 0 {
            return Err(bad(
                "async_connections and async_queue must be at least 1 (defaults: 1 connection per server, 1024 queued requests)",
            ));
        }
        #[cfg(feature = "text")]
        {
            use newcache_transport_text::{MAX_ASYNC_CONNECTIONS, MAX_ASYNC_QUEUE};
            // The async transport makes a slot per connection when it is built, and tokio's
            // channels take a bounded number of permits: a huge value allocated gigabytes
            // or panicked at the first request (an outside audit).
            if self.async_connections > MAX_ASYNC_CONNECTIONS {
                return Err(bad(format_args!(
                    "async_connections={} is over {MAX_ASYNC_CONNECTIONS} per server (one auto-pipelined connection carries any number of requests; the default is 1)",
                    self.async_connections
                )));
            }
            if self.async_queue > MAX_ASYNC_QUEUE {
                return Err(bad(format_args!(
                    "async_queue={} is over {MAX_ASYNC_QUEUE} requests per connection (past it a caller waits for room, within its read timeout; the default is 1024)",
                    self.async_queue
                )));
            }
        }
        if self.default_ttl == Ttl::Default {
            // It stands for the default itself: every store given the default TTL was kept
            // for ever, with no herd protection (an outside audit).
            return Err(bad(
                "default_ttl cannot be Ttl::Default, which stands for the default TTL itself: give Ttl::Seconds(n) (300 s is the default) or Ttl::Forever",
            ));
        }
        if self.default_ttl == Ttl::Seconds(0) {
            return Err(bad(
                "timeout=0 would make every store with the default TTL a delete (a zero TTL expires at once, as in Django); for no expiry use timeout=forever (Ttl::Forever)",
            ));
        }
        if let Ttl::Seconds(secs) = self.default_ttl {
            // A default TTL that ends past what memcached can be told (2106, its 32-bit
            // exptime) made every default-TTL store fail with TtlTooLong, the cache built.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if newcache_herd::wire_exptime(secs, now).is_err() {
                return Err(bad(format_args!(
                    "timeout={secs} s ends past what memcached can be told (its exptime is 32-bit Unix seconds); give a shorter default TTL, or timeout=forever"
                )));
            }
        }
        if !(self.early_beta.is_finite() && self.early_beta > 0.0) {
            return Err(bad(format_args!(
                "early_beta={} must be a positive number (XFetch's beta; 1.0 is the usual)",
                self.early_beta
            )));
        }
        if self.early_beta != defaults.early_beta && self.herd_policy != Policy::Early {
            return Err(bad(format_args!(
                "early_beta={} has no effect under herd={}: it is XFetch's beta, for herd=early",
                self.early_beta,
                self.herd_policy.name()
            )));
        }
        for (name, value, default) in [
            (
                "item_size_limit",
                self.item_size_limit,
                defaults.item_size_limit,
            ),
            ("inflate_limit", self.inflate_limit, defaults.inflate_limit),
        ] {
            if value == 0 {
                return Err(bad(format_args!(
                    "{name}=0 would refuse every value; give a size in bytes (the default is {default})"
                )));
            }
        }
        for (name, value) in &self.behaviors {
            check_behavior(self.transport, name, value)?;
        }
        // A timeout set by newcache's name and again by libmemcached's behavior: the behavior
        // won, silently. The URL refuses both given at all; here (a builder) a timeout that
        // is not the default counts as given.
        let behavior = |name: &str| self.behaviors.iter().any(|(n, _)| n == name);
        for (ours, changed, name) in [
            (
                "connect_timeout",
                self.connect_timeout != defaults.connect_timeout,
                "connect_timeout",
            ),
            (
                "read_timeout or write_timeout",
                self.read_timeout != defaults.read_timeout
                    || self.write_timeout != defaults.write_timeout,
                "_poll_timeout",
            ),
        ] {
            if changed && behavior(name) {
                return Err(bad(format_args!(
                    "{ours} and behaviors.{name} both set the same timeout; give one"
                )));
            }
        }
        // The memory transport talks to no server: servers given with it were silently
        // ignored, and a test meant for memcached passed against this process's map.
        if self.transport == TransportKind::Memory
            && !self.servers.is_empty()
            && self.servers != defaults.servers
        {
            return Err(memory_with_servers(&self.servers));
        }
        // Checked here, not only in the URL: the builder took an empty user name (every
        // request then failed as an I/O error), and a NUL byte or a user name without a
        // password failed only in libmemcached, as a backend error (an outside audit).
        if self.username.is_some() != self.password.is_some() {
            return Err(bad("give both username and password, or neither"));
        }
        if self.username.as_deref() == Some("") {
            return Err(bad(
                "username is empty; give the SASL user name, or neither username nor password",
            ));
        }
        if self.username.as_deref().is_some_and(|u| u.contains('\0'))
            || self.password.as_ref().is_some_and(|p| p.0.contains('\0'))
        {
            return Err(bad(
                "username or password holds a NUL byte, which SASL cannot carry (the value is not shown)",
            ));
        }
        if self.username.is_some()
            && self.transport != (TransportKind::Libmemcached { binary: true })
        {
            return Err(bad(
                "SASL (username/password) needs libmemcached's binary protocol: add binary=true",
            ));
        }
        if self.herd_timeout > newcache_herd::MAX_HERD_TIMEOUT {
            return Err(bad(format_args!(
                "herd_timeout={} is over {} s (4 h 33 min), the longest for which a value's soft expiry stays exact to the second in its flags; a longer one would make short TTLs stale at once. Give the seconds one recomputation may take, with room (default 60)",
                self.herd_timeout,
                newcache_herd::MAX_HERD_TIMEOUT
            )));
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
        // django-newcache's tuple holds a pickled value: another codec's bytes refused every
        // structured value at its first store (an outside audit); refused here instead.
        if self.envelope == EnvelopeFormat::DjangoNewcache && self.codec != ValueCodec::Pickle {
            return Err(bad(format_args!(
                "envelope=django-newcache writes django-newcache's pickled tuple, so it needs codec=pickle (this cache has codec={})",
                self.codec.name()
            )));
        }
        self.validate_tls()?;
        // Django's key function has no flavor: one given was dropped, and two services
        // that a flavor was to keep apart shared every key (an outside audit).
        if !self.flavor.is_empty() && self.key_function != KeyFunctionKind::Newcache {
            return Err(bad(
                "flavor goes with the newcache key function; Django's (key_function=django) keeps caches apart by key_prefix: give key_prefix instead of flavor",
            ));
        }
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
    pub(super) fn validate_tls(&self) -> Result<()> {
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

/// `herd=lease` (the default) and `herd=early` (lease at the expiry) claim a refresh with a
/// CAS store; libmemcached with `behaviors.cas=false` returns no CAS uniques, and without them
/// the single winner cannot be had (each stale read would fall back to the seed's racy
/// re-store). That combination is refused here rather than silently degraded; with herd off
/// (`herd=off`) the cache writes no envelopes and is let through.
pub(super) fn check_claims_can_cas(config: &Config) -> Result<()> {
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
pub(super) fn libmemcached_without_cas(config: &Config) -> bool {
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
pub(super) fn libmemcached_without_cas(_: &Config) -> bool {
    false
}

/// The error for servers given with the memory transport.
pub(super) fn memory_with_servers(servers: &[String]) -> crate::Error {
    bad(format_args!(
        "transport=memory keeps values in this process and talks to no server, but servers {servers:?} were given; drop them (newcache:///?transport=memory) or drop transport=memory"
    ))
}

pub(super) fn check_behavior(transport: TransportKind, name: &str, value: &str) -> Result<()> {
    match transport {
        TransportKind::Libmemcached { .. } => check_libmemcached_behavior(name, value),
        TransportKind::Text => check_text_behavior(name, value),
        TransportKind::Memory => Err(bad(format_args!(
            "behaviors.{name}: behaviors configure a memcached client; the memory transport takes none"
        ))),
    }
}

#[cfg(feature = "binary")]
pub(super) fn check_libmemcached_behavior(name: &str, value: &str) -> Result<()> {
    newcache_transport_binary::Behaviors::default()
        .set(name, value)
        .map_err(bad)
}

#[cfg(not(feature = "binary"))]
pub(super) fn check_libmemcached_behavior(name: &str, _: &str) -> Result<()> {
    Err(bad(format_args!(
        "behaviors.{name}: libmemcached behaviors need the `binary` feature of newcache"
    )))
}

#[cfg(feature = "text")]
pub(super) fn check_text_behavior(name: &str, value: &str) -> Result<()> {
    newcache_transport_text::TextConfig::default()
        .set_behavior(name, value)
        .map_err(|e| {
            bad(format_args!(
                "behaviors.{name} with the text transport: {e}"
            ))
        })
}

#[cfg(not(feature = "text"))]
pub(super) fn check_text_behavior(name: &str, _: &str) -> Result<()> {
    Err(bad(format_args!(
        "behaviors.{name}: the text transport needs the `text` feature of newcache"
    )))
}
