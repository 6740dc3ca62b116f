//! libmemcached behaviors under pylibmc's names, with pylibmc's units and pylibmc's order.

use std::time::Duration;

use libmemcached_sys::*;

pub use newcache_placement::{Distribution, Hash};

/// The `memcached_hash_t` value of a hash.
pub fn hash_to_libmemcached(hash: Hash) -> memcached_hash_t {
    match hash {
        Hash::Default => MEMCACHED_HASH_DEFAULT,
        Hash::Md5 => MEMCACHED_HASH_MD5,
        Hash::Crc => MEMCACHED_HASH_CRC,
        Hash::Fnv1_64 => MEMCACHED_HASH_FNV1_64,
        Hash::Fnv1a_64 => MEMCACHED_HASH_FNV1A_64,
        Hash::Fnv1_32 => MEMCACHED_HASH_FNV1_32,
        Hash::Fnv1a_32 => MEMCACHED_HASH_FNV1A_32,
        Hash::Murmur => MEMCACHED_HASH_MURMUR,
        Hash::Hsieh => MEMCACHED_HASH_HSIEH,
        Hash::Jenkins => MEMCACHED_HASH_JENKINS,
    }
}

/// The `memcached_server_distribution_t` value of a distribution.
pub fn distribution_to_libmemcached(distribution: Distribution) -> memcached_server_distribution_t {
    match distribution {
        Distribution::Modula => MEMCACHED_DISTRIBUTION_MODULA,
        Distribution::Consistent => MEMCACHED_DISTRIBUTION_CONSISTENT,
        Distribution::ConsistentKetama => MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA,
        Distribution::Random => MEMCACHED_DISTRIBUTION_RANDOM,
        Distribution::ConsistentKetamaSpy => MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA_SPY,
        Distribution::ConsistentWeighted => MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED,
    }
}

/// Why [`Behaviors::set`] refused a behavior.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BehaviorError {
    /// No behavior has this name.
    #[error("unknown behavior {name:?}; the known behaviors (pylibmc's names) are: {}", Behaviors::NAMES.join(", "))]
    Unknown {
        /// The name given.
        name: String,
    },
    /// The value cannot be parsed, or is out of range, for this behavior.
    #[error("behavior {name}: {value:?} is not valid; expected {expected}")]
    BadValue {
        /// The behavior.
        name: String,
        /// The value given.
        value: String,
        /// What the behavior takes.
        expected: String,
    },
    /// pylibmc knows the behavior, but it cannot work with this transport.
    #[error("behavior {name} is not supported by newcache's libmemcached transport: {reason}")]
    Unsupported {
        /// The behavior.
        name: String,
        /// Why, and what to use instead.
        reason: &'static str,
    },
}

/// The unit a time behavior is given in (pylibmc passes plain integers to libmemcached).
#[derive(Debug, Clone, Copy)]
enum Unit {
    Millis,
    Micros,
    Secs,
}

/// How one behavior's value is parsed and converted to libmemcached's integer.
#[derive(Debug, Clone, Copy)]
enum Conv {
    Bool,
    /// An integer from `min` to `max`.
    Count {
        min: u64,
        max: u64,
    },
    /// A duration in a unit, up to `i32::MAX` of them (libmemcached keeps `int32_t`); 0 has
    /// a meaning of its own (`retry_timeout`: try again at the next second; `dead_timeout`:
    /// never).
    Time(Unit),
    /// A socket or I/O timeout: as [`Conv::Time`], from 1. libmemcached takes 0 as "wait
    /// for nothing" (`connect_timeout`, `_poll_timeout`: every request fails as if the
    /// server were dead, and a `set` reports failure though it was stored) or as "no
    /// timeout at all" (`send_timeout`, `receive_timeout`: no `SO_SNDTIMEO`/`SO_RCVTIMEO`).
    Timeout(Unit),
    Hash,
    Distribution,
}

const I32_MAX: u64 = i32::MAX as u64;
const U32_MAX: u64 = u32::MAX as u64;

trait BehaviorValue: Sized {
    fn parse(value: &str, conv: Conv) -> Result<Self, String>;
    fn raw(&self, conv: Conv) -> Result<u64, String>;
    fn show(&self, conv: Conv) -> String;
}

impl BehaviorValue for bool {
    fn parse(value: &str, _: Conv) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err("a boolean (1, 0, true, false, yes, no, on, off)".into()),
        }
    }
    fn raw(&self, _: Conv) -> Result<u64, String> {
        Ok(u64::from(*self))
    }
    fn show(&self, _: Conv) -> String {
        u8::from(*self).to_string()
    }
}

impl BehaviorValue for u32 {
    fn parse(value: &str, conv: Conv) -> Result<Self, String> {
        let Conv::Count { min, max } = conv else {
            return Err("an integer".into());
        };
        let expected = || format!("an integer from {min} to {max}");
        let n: u64 = value.trim().parse().map_err(|_| expected())?;
        if n < min || n > max {
            return Err(expected());
        }
        u32::try_from(n).map_err(|_| expected())
    }
    fn raw(&self, conv: Conv) -> Result<u64, String> {
        match conv {
            Conv::Count { min, max } if (min..=max).contains(&u64::from(*self)) => {
                Ok(u64::from(*self))
            }
            Conv::Count { min, max } => Err(format!("an integer from {min} to {max}")),
            _ => Ok(u64::from(*self)),
        }
    }
    fn show(&self, _: Conv) -> String {
        self.to_string()
    }
}

/// The unit of a time behavior, and whether 0 is refused ([`Conv::Timeout`]).
fn time_unit(conv: Conv) -> Option<(Unit, bool)> {
    match conv {
        Conv::Time(unit) => Some((unit, false)),
        Conv::Timeout(unit) => Some((unit, true)),
        _ => None,
    }
}

/// What a [`Conv::Timeout`] of 0 would do, and what to give instead.
fn zero_timeout(unit: Unit) -> String {
    let (least, what) = match unit {
        Unit::Micros => (
            "1 µs",
            "to libmemcached 0 is no timeout at all (it sets no SO_SNDTIMEO/SO_RCVTIMEO), where the transport keeps every socket call bounded",
        ),
        Unit::Millis => (
            "1 ms",
            "libmemcached fails every wait at once with 0 (\"timeout was set to zero\"): requests fail as if the server were dead, and a set the server stored reports failure",
        ),
        Unit::Secs => ("1 s", "libmemcached would wait for nothing"),
    };
    format!(
        "a whole number of {} from 1 to {I32_MAX}: {what}; give at least {least}, or leave it unset for the transport's default",
        unit_name(unit)
    )
}

/// `d` in whole `unit`s, a fraction rounded up, so a non-zero duration never becomes 0
/// (which libmemcached reads as "time out at once" or "off").
fn in_units(d: Duration, unit: Unit) -> u128 {
    let (whole, rest) = match unit {
        Unit::Millis => (d.as_millis(), d.as_nanos() % 1_000_000),
        Unit::Micros => (d.as_micros(), d.as_nanos() % 1_000),
        Unit::Secs => (u128::from(d.as_secs()), u128::from(d.subsec_nanos())),
    };
    whole + u128::from(rest > 0)
}

impl BehaviorValue for Duration {
    fn parse(value: &str, conv: Conv) -> Result<Self, String> {
        let Some((unit, nonzero)) = time_unit(conv) else {
            return Err("a duration".into());
        };
        let min = u64::from(nonzero);
        let expected = || {
            format!(
                "a whole number of {} from {min} to {I32_MAX}",
                unit_name(unit)
            )
        };
        let n: u64 = value.trim().parse().map_err(|_| expected())?;
        if n > I32_MAX {
            return Err(expected());
        }
        if n < min {
            return Err(zero_timeout(unit));
        }
        Ok(match unit {
            Unit::Millis => Duration::from_millis(n),
            Unit::Micros => Duration::from_micros(n),
            Unit::Secs => Duration::from_secs(n),
        })
    }
    fn raw(&self, conv: Conv) -> Result<u64, String> {
        let Some((unit, nonzero)) = time_unit(conv) else {
            return Err("a duration".into());
        };
        if nonzero && self.is_zero() {
            return Err(zero_timeout(unit));
        }
        u64::try_from(in_units(*self, unit))
            .ok()
            .filter(|&n| n <= I32_MAX)
            .ok_or_else(|| format!("at most {I32_MAX} {}", unit_name(unit)))
    }
    fn show(&self, conv: Conv) -> String {
        match time_unit(conv) {
            Some((unit, _)) => in_units(*self, unit).to_string(),
            None => format!("{self:?}"),
        }
    }
}

impl BehaviorValue for Hash {
    fn parse(value: &str, _: Conv) -> Result<Self, String> {
        Hash::parse(value).ok_or_else(|| {
            let names: Vec<&str> = Hash::ALL.iter().map(|(_, n)| *n).collect();
            format!("one of {}", names.join(", "))
        })
    }
    fn raw(&self, _: Conv) -> Result<u64, String> {
        Ok(u64::from(hash_to_libmemcached(*self)))
    }
    fn show(&self, _: Conv) -> String {
        self.name().to_string()
    }
}

impl BehaviorValue for Distribution {
    fn parse(value: &str, _: Conv) -> Result<Self, String> {
        Distribution::parse(value).ok_or_else(|| {
            let names: Vec<&str> = Distribution::ALL.iter().map(|(_, n)| *n).collect();
            format!(
                "one of {} (underscores for spaces are fine)",
                names.join(", ")
            )
        })
    }
    fn raw(&self, _: Conv) -> Result<u64, String> {
        Ok(u64::from(distribution_to_libmemcached(*self)))
    }
    fn show(&self, _: Conv) -> String {
        self.name().to_string()
    }
}

fn unit_name(unit: Unit) -> &'static str {
    match unit {
        Unit::Millis => "milliseconds",
        Unit::Micros => "microseconds",
        Unit::Secs => "seconds",
    }
}

/// One behavior to hand to `memcached_behavior_set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    /// pylibmc's name.
    pub name: &'static str,
    /// The libmemcached behavior.
    pub flag: memcached_behavior_t,
    /// The integer libmemcached gets.
    pub raw: u64,
    /// The value as a user would write it.
    pub shown: String,
}

/// Why `buffer_requests` is refused when on (off is accepted: libmemcached's default).
const BUFFER_REQUESTS_REFUSED: &str = "libmemcached's buffered mode queues sets and deletes without reading their answers, which a later request then reads as its own, so no store's result or failure could be known: an add of a taken key or a cas with an out-of-date token would report stored when nothing was stored; leave it off (set_many/store_many already send a whole batch on one handle, and newcache's text transport pipelines them)";

/// Behaviors pylibmc has but this transport refuses, with the reason.
const REFUSED: [(&str, &str); 4] = [
    (
        "_noreply",
        "without replies no store, delete or incr could report its outcome",
    ),
    (
        "_hash_with_prefix_key",
        "this transport sets no libmemcached namespace; newcache's key function builds the full key",
    ),
    (
        "namespace",
        "use newcache's key function (key_prefix) instead of a libmemcached namespace",
    ),
    (
        "pickle_protocol",
        "it is pylibmc's own Python serialization setting; newcache's codec decides the value format",
    ),
];

macro_rules! behaviors {
    ($(
        $(#[$doc:meta])*
        $field:ident: $ty:ty => $name:literal, $flag:ident, $conv:expr;
    )*) => {
        /// libmemcached behaviors, by pylibmc's names, meanings and units.
        ///
        /// Every field is `None` until set, and an unset behavior is left at libmemcached's
        /// default: `Behaviors::default()` is exactly libmemcached's defaults (the transport
        /// adds its own timeout and CAS defaults on top, see
        /// [`BinaryTransport`](crate::BinaryTransport)). Set fields directly, or by name with
        /// [`Behaviors::set`], which parses the value as pylibmc users write it.
        ///
        /// The transport hands the set behaviors to `memcached_behavior_set` in pylibmc's
        /// order, which is the order of the fields here (and of [`Behaviors::NAMES`]), then
        /// adds the servers, as pylibmc does; see the crate documentation for what each
        /// behavior does in libmemcached 1.1.4.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Behaviors {
            $( $(#[$doc])* pub $field: Option<$ty>, )*
        }

        impl Behaviors {
            /// Every behavior name [`Behaviors::set`] takes, in the order they are applied
            /// (pylibmc's).
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            fn set_known(&mut self, name: &str, value: &str) -> Option<Result<(), BehaviorError>> {
                match name {
                    $(
                        $name => Some(
                            <$ty as BehaviorValue>::parse(value, $conv)
                                .map(|v| self.$field = Some(v))
                                .map_err(|expected| BehaviorError::BadValue {
                                    name: name.to_string(),
                                    value: value.to_string(),
                                    expected,
                                }),
                        ),
                    )*
                    _ => None,
                }
            }

            /// The set behaviors as libmemcached settings, in pylibmc's order; a behavior
            /// this transport refuses (`buffer_requests` on) is an error.
            pub(crate) fn settings(&self) -> Result<Vec<Setting>, BehaviorError> {
                self.check_supported()?;
                let mut out = Vec::new();
                $(
                    if let Some(v) = &self.$field {
                        let raw = v.raw($conv).map_err(|expected| BehaviorError::BadValue {
                            name: $name.to_string(),
                            value: v.show($conv),
                            expected,
                        })?;
                        out.push(Setting { name: $name, flag: $flag, raw, shown: v.show($conv) });
                    }
                )*
                Ok(out)
            }

            /// The set behaviors as `(name, value)` in pylibmc's units and order.
            fn pairs(&self) -> Vec<(&'static str, String)> {
                let mut out = Vec::new();
                $( if let Some(v) = &self.$field { out.push(($name, v.show($conv))); } )*
                out
            }

            /// The libmemcached behavior a name maps to.
            pub(crate) fn flag(name: &str) -> Option<memcached_behavior_t> {
                match name {
                    $( $name => Some($flag), )*
                    _ => None,
                }
            }
        }
    };
}

behaviors! {
    /// `no_block` (`MEMCACHED_BEHAVIOR_NO_BLOCK`): asynchronous I/O; writes are queued and
    /// flushed when a reply is needed. Default off.
    no_block: bool => "no_block", MEMCACHED_BEHAVIOR_NO_BLOCK, Conv::Bool;
    /// `tcp_nodelay` (`MEMCACHED_BEHAVIOR_TCP_NODELAY`): `TCP_NODELAY` on every socket
    /// (no Nagle delay). Default off.
    tcp_nodelay: bool => "tcp_nodelay", MEMCACHED_BEHAVIOR_TCP_NODELAY, Conv::Bool;
    /// `tcp_keepalive` (`MEMCACHED_BEHAVIOR_TCP_KEEPALIVE`): `SO_KEEPALIVE` on every socket.
    /// Default off.
    tcp_keepalive: bool => "tcp_keepalive", MEMCACHED_BEHAVIOR_TCP_KEEPALIVE, Conv::Bool;
    /// `hash` (`MEMCACHED_BEHAVIOR_HASH`): the key hash that picks a server. Default
    /// `default` (one-at-a-time).
    hash: Hash => "hash", MEMCACHED_BEHAVIOR_HASH, Conv::Hash;
    /// `ketama_hash` (`MEMCACHED_BEHAVIOR_KETAMA_HASH`): the hash that places servers on the
    /// ketama continuum. Default: unset (libmemcached uses the key hash, or MD5 for
    /// weighted ketama).
    ketama_hash: Hash => "ketama_hash", MEMCACHED_BEHAVIOR_KETAMA_HASH, Conv::Hash;
    /// `ketama` (`MEMCACHED_BEHAVIOR_KETAMA`): on selects the `consistent ketama`
    /// distribution, off selects `modula`. In libmemcached 1.1.4 it changes **only the
    /// distribution**: the key hash stays what `hash` says (default one-at-a-time), whatever
    /// pylibmc's documentation claims about MD5. Default off.
    ketama: bool => "ketama", MEMCACHED_BEHAVIOR_KETAMA, Conv::Bool;
    /// `ketama_weighted` (`MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`): on sets the key hash and the
    /// continuum hash to MD5 and selects `consistent weighted` (server weights count). Off
    /// does what `ketama = on` does (libmemcached's quirk, kept as pylibmc has it).
    /// Default off.
    ketama_weighted: bool => "ketama_weighted", MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, Conv::Bool;
    /// `distribution` (`MEMCACHED_BEHAVIOR_DISTRIBUTION`): how keys map to servers.
    /// Default `modula`.
    distribution: Distribution => "distribution", MEMCACHED_BEHAVIOR_DISTRIBUTION, Conv::Distribution;
    /// `cas` (`MEMCACHED_BEHAVIOR_SUPPORT_CAS`): fetch CAS uniques (text mode sends `gets`
    /// instead of `get`; the binary protocol always returns them). libmemcached's default is
    /// off; this transport turns it on unless told otherwise, because the newcache
    /// [`Transport`](newcache_transport::Transport) returns CAS uniques.
    cas: bool => "cas", MEMCACHED_BEHAVIOR_SUPPORT_CAS, Conv::Bool;
    /// `buffer_requests` (`MEMCACHED_BEHAVIOR_BUFFER_REQUESTS`): libmemcached queues sets
    /// and deletes without reading their answers. **Refused when on**
    /// ([`BehaviorError::Unsupported`], by [`Behaviors::set`] and by
    /// [`BinaryTransport::new`](crate::BinaryTransport::new)): the answers are then read by
    /// later requests as their own, so an `add` of a taken key or a `cas` with an out-of-date
    /// token reported `Stored` with nothing stored. Off (libmemcached's default) is accepted.
    buffer_requests: bool => "buffer_requests", MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, Conv::Bool;
    /// `verify_keys` (`MEMCACHED_BEHAVIOR_VERIFY_KEY`): libmemcached checks text-protocol
    /// keys itself. libmemcached refuses this behavior in binary mode (as pylibmc then
    /// fails); this transport validates every key anyway. Default off.
    verify_keys: bool => "verify_keys", MEMCACHED_BEHAVIOR_VERIFY_KEY, Conv::Bool;
    /// `connect_timeout` (`MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT`), in **milliseconds**: how
    /// long a connect may take. libmemcached's default 4000 ms; this transport's 250 ms. At
    /// least 1 ms: libmemcached fails every connect at once with 0.
    connect_timeout: Duration => "connect_timeout", MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, Conv::Timeout(Unit::Millis);
    /// `send_timeout` (`MEMCACHED_BEHAVIOR_SND_TIMEOUT`), in **microseconds**: `SO_SNDTIMEO`
    /// on every socket. libmemcached's sockets are non-blocking, so the wait that matters is
    /// `_poll_timeout`. libmemcached's default 0 (none); this transport's: the poll timeout.
    /// At least 1 µs: 0 is refused (no timeout at all).
    send_timeout: Duration => "send_timeout", MEMCACHED_BEHAVIOR_SND_TIMEOUT, Conv::Timeout(Unit::Micros);
    /// `receive_timeout` (`MEMCACHED_BEHAVIOR_RCV_TIMEOUT`), in **microseconds**:
    /// `SO_RCVTIMEO` on every socket (see `send_timeout`). libmemcached's default 0 (none);
    /// this transport's: the poll timeout. At least 1 µs: 0 is refused (no timeout at all).
    receive_timeout: Duration => "receive_timeout", MEMCACHED_BEHAVIOR_RCV_TIMEOUT, Conv::Timeout(Unit::Micros);
    /// `num_replicas` (`MEMCACHED_BEHAVIOR_NUMBER_OF_REPLICAS`): also store each item on
    /// this many following servers. Default 0.
    num_replicas: u32 => "num_replicas", MEMCACHED_BEHAVIOR_NUMBER_OF_REPLICAS, Conv::Count { min: 0, max: U32_MAX };
    /// `auto_eject` (`MEMCACHED_BEHAVIOR_AUTO_EJECT_HOSTS`): take a server out of the
    /// distribution after `failure_limit` failures (pylibmc: deprecated, prefer
    /// `remove_failed`). Default off.
    auto_eject: bool => "auto_eject", MEMCACHED_BEHAVIOR_AUTO_EJECT_HOSTS, Conv::Bool;
    /// `retry_timeout` (`MEMCACHED_BEHAVIOR_RETRY_TIMEOUT`), in **seconds**: after a failed
    /// connect, how long a server is left alone (requests to it fail at once) before the
    /// next try (0: at the next second). pylibmc's older `_retry_timeout` is accepted too.
    /// Default 2 s.
    retry_timeout: Duration => "retry_timeout", MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, Conv::Time(Unit::Secs);
    /// `remove_failed` (`MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS`): non-zero takes a server
    /// out of the distribution after `failure_limit` failures in a row. libmemcached 1.1.4
    /// only looks at whether it is non-zero. Default 0.
    remove_failed: u32 => "remove_failed", MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, Conv::Count { min: 0, max: U32_MAX };
    /// `failure_limit` (`MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT`): failures in a row before
    /// a server is marked failed; at least 1. Default 5.
    failure_limit: u32 => "failure_limit", MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, Conv::Count { min: 1, max: U32_MAX };
    /// `_io_msg_watermark` (`MEMCACHED_BEHAVIOR_IO_MSG_WATERMARK`): queued messages before a
    /// flush in non-blocking mode. Default 500.
    io_msg_watermark: u32 => "_io_msg_watermark", MEMCACHED_BEHAVIOR_IO_MSG_WATERMARK, Conv::Count { min: 0, max: U32_MAX };
    /// `_io_bytes_watermark` (`MEMCACHED_BEHAVIOR_IO_BYTES_WATERMARK`): queued bytes before a
    /// flush in non-blocking mode. Default 66560.
    io_bytes_watermark: u32 => "_io_bytes_watermark", MEMCACHED_BEHAVIOR_IO_BYTES_WATERMARK, Conv::Count { min: 0, max: U32_MAX };
    /// `_io_key_prefetch` (`MEMCACHED_BEHAVIOR_IO_KEY_PREFETCH`): keys sent before reading
    /// replies in a multi-get. Default 0.
    io_key_prefetch: u32 => "_io_key_prefetch", MEMCACHED_BEHAVIOR_IO_KEY_PREFETCH, Conv::Count { min: 0, max: U32_MAX };
    /// `_sort_hosts` (`MEMCACHED_BEHAVIOR_SORT_HOSTS`): sort the server list by name (changes
    /// `modula` placement). Default off.
    sort_hosts: bool => "_sort_hosts", MEMCACHED_BEHAVIOR_SORT_HOSTS, Conv::Bool;
    /// `_poll_timeout` (`MEMCACHED_BEHAVIOR_POLL_TIMEOUT`), in **milliseconds**: how long
    /// libmemcached waits for a socket to become readable or writable, i.e. the read/write
    /// timeout. libmemcached's default 5000 ms; this transport's 500 ms. At least 1 ms:
    /// libmemcached fails every wait at once with 0 (a `set` the server stored reports
    /// failure).
    poll_timeout: Duration => "_poll_timeout", MEMCACHED_BEHAVIOR_POLL_TIMEOUT, Conv::Timeout(Unit::Millis);
    /// `_socket_send_size` (`MEMCACHED_BEHAVIOR_SOCKET_SEND_SIZE`): `SO_SNDBUF` in bytes.
    /// Default: the OS's.
    socket_send_size: u32 => "_socket_send_size", MEMCACHED_BEHAVIOR_SOCKET_SEND_SIZE, Conv::Count { min: 1, max: I32_MAX };
    /// `_socket_recv_size` (`MEMCACHED_BEHAVIOR_SOCKET_RECV_SIZE`): `SO_RCVBUF` in bytes.
    /// Default: the OS's.
    socket_recv_size: u32 => "_socket_recv_size", MEMCACHED_BEHAVIOR_SOCKET_RECV_SIZE, Conv::Count { min: 1, max: I32_MAX };
    /// `dead_timeout` (`MEMCACHED_BEHAVIOR_DEAD_TIMEOUT`), in **seconds**: with
    /// `remove_failed`/`auto_eject`, when to try an ejected server again (0: never).
    /// Default 0.
    dead_timeout: Duration => "dead_timeout", MEMCACHED_BEHAVIOR_DEAD_TIMEOUT, Conv::Time(Unit::Secs);
}

impl Behaviors {
    /// Sets one behavior by pylibmc's name from its value as text (`"1"`, `"true"`,
    /// `"md5"`, `"consistent ketama"`, `"250"`…), in pylibmc's units: `connect_timeout` and
    /// `_poll_timeout` in milliseconds, `send_timeout`/`receive_timeout` in microseconds,
    /// `retry_timeout`/`dead_timeout` in seconds. The socket and I/O timeouts
    /// (`connect_timeout`, `_poll_timeout`, `send_timeout`, `receive_timeout`) take at least
    /// 1 of their unit; `retry_timeout` and `dead_timeout` take 0 (their meaning in
    /// libmemcached: try again at the next second; never). `buffer_requests` is refused when
    /// on (see its field).
    ///
    /// ```
    /// use newcache_transport_binary::{Behaviors, Distribution};
    /// let mut b = Behaviors::default();
    /// b.set("distribution", "consistent ketama").unwrap();
    /// b.set("connect_timeout", "100").unwrap();
    /// assert_eq!(b.distribution, Some(Distribution::ConsistentKetama));
    /// assert_eq!(b.connect_timeout, Some(std::time::Duration::from_millis(100)));
    /// assert!(b.set("ketama", "maybe").is_err());
    /// assert!(b.set("no_such_behavior", "1").is_err());
    /// assert!(b.set("connect_timeout", "0").is_err());
    /// assert!(b.set("buffer_requests", "1").is_err());
    /// ```
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), BehaviorError> {
        let canonical = match name {
            // pylibmc's Python layer renames the old underscored name.
            "_retry_timeout" => "retry_timeout",
            n => n,
        };
        if canonical == "buffer_requests" && bool::parse(value, Conv::Bool) == Ok(true) {
            return Err(BehaviorError::Unsupported {
                name: name.to_string(),
                reason: BUFFER_REQUESTS_REFUSED,
            });
        }
        if let Some(result) = self.set_known(canonical, value) {
            return result;
        }
        if let Some((_, reason)) = REFUSED.iter().find(|(n, _)| *n == name) {
            return Err(BehaviorError::Unsupported {
                name: name.to_string(),
                reason,
            });
        }
        Err(BehaviorError::Unknown {
            name: name.to_string(),
        })
    }

    /// [`BehaviorError::Unsupported`] for a behavior set (on the fields directly) that this
    /// transport refuses: `buffer_requests` on.
    fn check_supported(&self) -> Result<(), BehaviorError> {
        if self.buffer_requests == Some(true) {
            return Err(BehaviorError::Unsupported {
                name: "buffer_requests".to_string(),
                reason: BUFFER_REQUESTS_REFUSED,
            });
        }
        Ok(())
    }

    /// Sets many behaviors by name (see [`Behaviors::set`]); stops at the first error.
    pub fn set_all<'a>(
        &mut self,
        behaviors: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), BehaviorError> {
        behaviors
            .into_iter()
            .try_for_each(|(name, value)| self.set(name, value))
    }

    /// True when no behavior is set (libmemcached's defaults throughout).
    pub fn is_empty(&self) -> bool {
        *self == Behaviors::default()
    }

    /// The set behaviors as `(name, value)` in pylibmc's units and order, as
    /// [`Behaviors::set`] takes them back.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        self.pairs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_accepted_with_a_valid_value_and_round_trips() {
        for &name in Behaviors::NAMES {
            let value = match name {
                "hash" | "ketama_hash" => "md5",
                "distribution" => "consistent_ketama",
                n if n.ends_with("timeout") => "7",
                // Refused when on.
                "buffer_requests" => "0",
                _ => "1",
            };
            let mut b = Behaviors::default();
            b.set(name, value)
                .unwrap_or_else(|e| panic!("{name}={value}: {e}"));
            assert!(!b.is_empty(), "{name} set nothing");
            let pairs = b.to_pairs();
            assert_eq!(pairs.len(), 1, "{name}: {pairs:?}");
            assert_eq!(pairs[0].0, name);
            let mut again = Behaviors::default();
            again.set(pairs[0].0, &pairs[0].1).unwrap();
            assert_eq!(again, b, "{name} does not round-trip");
            assert!(Behaviors::flag(name).is_some());
        }
    }

    #[test]
    fn unknown_names_and_bad_values_are_errors_naming_them() {
        let mut b = Behaviors::default();
        let err = b.set("ketamma", "1").unwrap_err();
        assert!(matches!(&err, BehaviorError::Unknown { name } if name == "ketamma"));
        assert!(err.to_string().contains("\"ketamma\""), "{err}");
        assert!(err.to_string().contains("distribution"), "{err}");

        for (name, value) in [
            ("tcp_nodelay", "maybe"),
            ("hash", "sha1"),
            ("distribution", "virtual bucket"),
            ("connect_timeout", "-1"),
            ("connect_timeout", "2147483648"),
            ("failure_limit", "0"),
            ("num_replicas", "4294967296"),
            ("retry_timeout", "1.5"),
        ] {
            let err = b.set(name, value).unwrap_err();
            match &err {
                BehaviorError::BadValue {
                    name: n, value: v, ..
                } => {
                    assert_eq!((n.as_str(), v.as_str()), (name, value));
                }
                other => panic!("{name}={value}: {other:?}"),
            }
            let text = err.to_string();
            assert!(text.contains(name) && text.contains(value), "{text}");
        }
        assert!(b.is_empty(), "a refused value was stored: {b:?}");

        for name in ["_noreply", "pickle_protocol", "namespace"] {
            assert!(matches!(
                b.set(name, "1"),
                Err(BehaviorError::Unsupported { .. })
            ));
        }
    }

    #[test]
    fn values_parse_in_pylibmcs_units_and_spellings() {
        let mut b = Behaviors::default();
        b.set_all([
            ("connect_timeout", "250"),
            ("receive_timeout", "1500000"),
            ("send_timeout", "20"),
            ("_retry_timeout", "3"),
            ("dead_timeout", "60"),
            ("_poll_timeout", "1000"),
            ("distribution", "consistent ketama spy"),
            ("hash", "FNV1A_32"),
            ("ketama", "True"),
            ("cas", "no"),
        ])
        .unwrap();
        assert_eq!(b.connect_timeout, Some(Duration::from_millis(250)));
        assert_eq!(b.receive_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(b.send_timeout, Some(Duration::from_micros(20)));
        assert_eq!(b.retry_timeout, Some(Duration::from_secs(3)));
        assert_eq!(b.dead_timeout, Some(Duration::from_secs(60)));
        assert_eq!(b.poll_timeout, Some(Duration::from_secs(1)));
        assert_eq!(b.distribution, Some(Distribution::ConsistentKetamaSpy));
        assert_eq!(b.hash, Some(Hash::Fnv1a_32));
        assert_eq!((b.ketama, b.cas), (Some(true), Some(false)));
    }

    #[test]
    fn settings_follow_pylibmcs_order_and_raw_values() {
        let mut b = Behaviors::default();
        // Given in another order than pylibmc applies them.
        b.set_all([
            ("distribution", "consistent"),
            ("ketama", "1"),
            ("hash", "crc"),
            ("connect_timeout", "100"),
            ("no_block", "1"),
        ])
        .unwrap();
        let s = b.settings().unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "no_block",
                "hash",
                "ketama",
                "distribution",
                "connect_timeout"
            ]
        );
        let raw: Vec<(memcached_behavior_t, u64)> = s.iter().map(|s| (s.flag, s.raw)).collect();
        assert_eq!(
            raw,
            [
                (MEMCACHED_BEHAVIOR_NO_BLOCK, 1),
                (MEMCACHED_BEHAVIOR_HASH, u64::from(MEMCACHED_HASH_CRC)),
                (MEMCACHED_BEHAVIOR_KETAMA, 1),
                (
                    MEMCACHED_BEHAVIOR_DISTRIBUTION,
                    u64::from(MEMCACHED_DISTRIBUTION_CONSISTENT)
                ),
                (MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, 100),
            ]
        );
    }

    #[test]
    fn socket_and_io_timeouts_refuse_zero_naming_the_behavior_and_the_least() {
        for (name, least) in [
            ("connect_timeout", "1 ms"),
            ("_poll_timeout", "1 ms"),
            ("send_timeout", "1 µs"),
            ("receive_timeout", "1 µs"),
        ] {
            let mut b = Behaviors::default();
            for zero in ["0", " 0 ", "00"] {
                let err = b.set(name, zero).unwrap_err();
                assert!(
                    matches!(&err, BehaviorError::BadValue { name: n, .. } if n == name),
                    "{name}={zero}: {err:?}"
                );
                let text = err.to_string();
                assert!(
                    text.contains(name) && text.contains(&format!("give at least {least}")),
                    "{text}"
                );
            }
            assert!(b.is_empty(), "{name}: a refused value was kept: {b:?}");
            b.set(name, "1").unwrap();
            assert_eq!(b.settings().unwrap()[0].raw, 1, "{name}");
        }
        // Set on the fields directly: refused when the transport takes them.
        for b in [
            Behaviors {
                connect_timeout: Some(Duration::ZERO),
                ..Behaviors::default()
            },
            Behaviors {
                poll_timeout: Some(Duration::ZERO),
                ..Behaviors::default()
            },
            Behaviors {
                send_timeout: Some(Duration::ZERO),
                ..Behaviors::default()
            },
            Behaviors {
                receive_timeout: Some(Duration::ZERO),
                ..Behaviors::default()
            },
        ] {
            let err = b.settings().unwrap_err();
            assert!(err.to_string().contains("give at least 1"), "{err}");
        }
        // 0 means something to libmemcached here: try again at the next second; never.
        let mut b = Behaviors::default();
        b.set_all([("retry_timeout", "0"), ("dead_timeout", "0")])
            .unwrap();
        let raw: Vec<u64> = b.settings().unwrap().iter().map(|s| s.raw).collect();
        assert_eq!(raw, [0, 0]);
    }

    #[test]
    fn buffer_requests_is_refused_when_on_by_name_and_by_field() {
        let mut b = Behaviors::default();
        for on in ["1", "true", "On"] {
            assert!(matches!(
                b.set("buffer_requests", on),
                Err(BehaviorError::Unsupported { .. })
            ));
        }
        assert!(b.is_empty());
        b.set("buffer_requests", "off").unwrap();
        assert_eq!(b.settings().unwrap()[0].raw, 0);
        let b = Behaviors {
            buffer_requests: Some(true),
            ..Behaviors::default()
        };
        let err = b.settings().unwrap_err();
        assert!(
            matches!(&err, BehaviorError::Unsupported { name, .. } if name == "buffer_requests"),
            "{err:?}"
        );
        assert!(err.to_string().contains("leave it off"), "{err}");
    }

    #[test]
    fn durations_round_up_to_the_unit_and_refuse_overflow() {
        let b = Behaviors {
            connect_timeout: Some(Duration::from_micros(1500)),
            dead_timeout: Some(Duration::from_millis(1)),
            ..Behaviors::default()
        };
        let raw: Vec<u64> = b.settings().unwrap().iter().map(|s| s.raw).collect();
        assert_eq!(raw, [2, 1]);
        let b = Behaviors {
            connect_timeout: Some(Duration::from_secs(u64::from(u32::MAX))),
            ..Behaviors::default()
        };
        assert!(matches!(b.settings(), Err(BehaviorError::BadValue { .. })));
    }
}
