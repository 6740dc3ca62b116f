//! Which memcached server holds a key, computed exactly as libmemcached 1.1.4 (the C client
//! under pylibmc) computes it. Pure functions: no I/O, no clock.
//!
//! A cluster is a server list plus libmemcached's placement behaviors (`hash`, `ketama`,
//! `ketama_weighted`, `distribution`, `_sort_hosts`, and weights on the servers). [`Behaviors`]
//! takes them by pylibmc's names and resolves them, in pylibmc's order and with
//! libmemcached's side effects, into [`Settings`]; a [`Ring`] built from the servers and the
//! settings answers "which server for this key".
//!
//! ```
//! use newcache_placement::{Behaviors, Ring, Server};
//!
//! let servers: Vec<Server> = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11212:2"]
//!     .iter()
//!     .map(|s| Server::parse(s))
//!     .collect::<Result<_, _>>()?;
//! let mut behaviors = Behaviors::default();
//! behaviors.set("ketama", "true")?;
//! let ring = Ring::new(&servers, &behaviors.settings(&servers));
//! let index = ring.server_for_key(b"user:42").expect("every server is live");
//! assert!(index < servers.len());
//! # Ok::<(), newcache_placement::PlacementError>(())
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable
    )
)]
#![forbid(unsafe_code)]

pub mod hash;

use std::cmp::Ordering;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// memcached's default port. libmemcached leaves it out of ketama point names.
pub const DEFAULT_PORT: u16 = 11211;
/// Points per server on an unweighted ring (libmemcached's `MEMCACHED_POINTS_PER_SERVER`).
pub const POINTS_PER_SERVER: u32 = 100;
/// Points per server on a weighted ring at equal weights
/// (`MEMCACHED_POINTS_PER_SERVER_KETAMA`).
pub const POINTS_PER_SERVER_WEIGHTED: u32 = 160;

/// Why a server entry or a placement behavior was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// A server entry is not `host`, `host:port`, `host:port:weight` or `[v6]:port[:weight]`.
    BadServer {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A behavior's value is not one it takes.
    BadValue {
        /// The behavior's name.
        name: String,
        /// The value given.
        value: String,
        /// What it takes.
        expected: String,
    },
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementError::BadServer { entry, reason } => {
                write!(f, "server {entry:?}: {reason}")
            }
            PlacementError::BadValue {
                name,
                value,
                expected,
            } => write!(f, "behavior {name} = {value:?}: expected {expected}"),
        }
    }
}

impl std::error::Error for PlacementError {}

/// A key hash, by pylibmc's name (`hash` and `ketama_hash` behaviors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(non_camel_case_types)]
pub enum Hash {
    /// `default`: Bob Jenkins' one-at-a-time hash, libmemcached's default.
    #[default]
    Default,
    /// `md5`.
    Md5,
    /// `crc`: `((~crc32) >> 16) & 0x7fff`.
    Crc,
    /// `fnv1_64`.
    Fnv1_64,
    /// `fnv1a_64` (libhashkit computes it in 32 bits).
    Fnv1a_64,
    /// `fnv1_32`.
    Fnv1_32,
    /// `fnv1a_32`.
    Fnv1a_32,
    /// `murmur`: MurmurHash2 (only when libhashkit was built with it). Not computed here.
    Murmur,
    /// `hsieh`: Paul Hsieh's hash (only when libhashkit was built with it; Debian 12's was
    /// not). Not computed here.
    Hsieh,
    /// `jenkins`: Bob Jenkins' lookup3. Not computed here.
    Jenkins,
}

impl Hash {
    /// Every hash, with its pylibmc name.
    pub const ALL: [(Hash, &'static str); 10] = [
        (Hash::Default, "default"),
        (Hash::Md5, "md5"),
        (Hash::Crc, "crc"),
        (Hash::Fnv1_64, "fnv1_64"),
        (Hash::Fnv1a_64, "fnv1a_64"),
        (Hash::Fnv1_32, "fnv1_32"),
        (Hash::Fnv1a_32, "fnv1a_32"),
        (Hash::Murmur, "murmur"),
        (Hash::Hsieh, "hsieh"),
        (Hash::Jenkins, "jenkins"),
    ];

    /// pylibmc's name of the hash.
    pub fn name(self) -> &'static str {
        Hash::ALL
            .iter()
            .find(|(h, _)| *h == self)
            .map_or("default", |(_, n)| n)
    }

    /// The hash by pylibmc's name (case-insensitive).
    pub fn parse(value: &str) -> Option<Hash> {
        Hash::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(value.trim()))
            .map(|(h, _)| *h)
    }

    /// The hashes this crate computes (all but `murmur`, `hsieh` and `jenkins`).
    pub fn is_computed(self) -> bool {
        !matches!(self, Hash::Murmur | Hash::Hsieh | Hash::Jenkins)
    }

    /// The hash of `key`, or `None` for a hash this crate does not compute.
    pub fn digest(self, key: &[u8]) -> Option<u32> {
        Some(match self {
            Hash::Default => hash::one_at_a_time(key),
            Hash::Md5 => hash::md5(key),
            Hash::Crc => hash::crc(key),
            Hash::Fnv1_64 => hash::fnv1_64(key),
            Hash::Fnv1a_64 => hash::fnv1a_64(key),
            Hash::Fnv1_32 => hash::fnv1_32(key),
            Hash::Fnv1a_32 => hash::fnv1a_32(key),
            Hash::Murmur | Hash::Hsieh | Hash::Jenkins => return None,
        })
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How keys are spread over servers (`distribution`), by pylibmc's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Distribution {
    /// `modula`: `hash(key) % number_of_servers`, libmemcached's default.
    #[default]
    Modula,
    /// `consistent`: a consistent-hashing ring (built as ketama's).
    Consistent,
    /// `consistent ketama`: the ketama ring (what the `ketama` behavior selects).
    ConsistentKetama,
    /// `random`: a random server per request.
    Random,
    /// `consistent ketama spy`: ketama with spymemcached's point names (`/host:port-i`).
    ConsistentKetamaSpy,
    /// `consistent weighted`: ketama with MD5 points in proportion to server weights.
    ConsistentWeighted,
}

impl Distribution {
    /// Every distribution, with its pylibmc name (pylibmc spells them with spaces;
    /// [`Distribution::parse`] also takes underscores).
    pub const ALL: [(Distribution, &'static str); 6] = [
        (Distribution::Modula, "modula"),
        (Distribution::Consistent, "consistent"),
        (Distribution::ConsistentKetama, "consistent ketama"),
        (Distribution::Random, "random"),
        (Distribution::ConsistentKetamaSpy, "consistent ketama spy"),
        (Distribution::ConsistentWeighted, "consistent weighted"),
    ];

    /// pylibmc's name of the distribution.
    pub fn name(self) -> &'static str {
        Distribution::ALL
            .iter()
            .find(|(d, _)| *d == self)
            .map_or("modula", |(_, n)| n)
    }

    /// The distribution by pylibmc's name (case-insensitive; `_` may stand for a space).
    pub fn parse(value: &str) -> Option<Distribution> {
        let value = value.trim().replace('_', " ");
        Distribution::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(&value))
            .map(|(d, _)| *d)
    }

    /// The ring distributions, the ones that skip ejected servers.
    pub fn is_consistent(self) -> bool {
        !matches!(self, Distribution::Modula | Distribution::Random)
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The largest server weight: pylibmc reads a server's weight as a 16-bit number, so a
/// weight of 65,536 or more would reach its libmemcached cut to its low 16 bits (70,000 as
/// 4,464) and Python would place keys on other servers than newcache does.
pub const MAX_WEIGHT: u32 = 65_535;

/// Why a server entry's weight `w` is refused: what to give instead.
pub fn weight_refused(w: &str) -> String {
    format!(
        "weight {w:?} is not a whole number from 1 to {MAX_WEIGHT} (pylibmc reads weights as 16 bits, so a larger one would place keys elsewhere in Python)"
    )
}

/// One server of a cluster: its host exactly as configured (ketama points are named after it,
/// so no DNS is involved), its port and its weight.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    /// The host as configured: a name or an address, IPv6 without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The weight (1 unless given); counts only on weighted rings.
    pub weight: u32,
}

/// Whether the server entry `entry` is an IPv6 address without brackets, alone or with a
/// port (and a weight): its colons cannot be told from the port's, so it is refused, saying
/// it goes in brackets (`[::1]:11211`).
pub fn looks_like_bare_ipv6(entry: &str) -> bool {
    fn v6(s: &str) -> bool {
        s.parse::<std::net::Ipv6Addr>().is_ok()
    }
    fn less(s: &str) -> Option<&str> {
        s.rsplit_once(':').map(|(a, _)| a)
    }
    entry.contains("::")
        || v6(entry)
        || less(entry).is_some_and(v6)
        || less(entry).and_then(less).is_some_and(v6)
        || entry.matches(':').count() > 3
}

/// The path of a unix-domain socket server entry: `/path` (as pylibmc and libmemcached
/// write one) or `unix:/path` (as python-memcached, pymemcache and Django do).
pub fn socket_path(entry: &str) -> Option<&str> {
    let entry = entry.trim();
    let path = entry.strip_prefix("unix:").unwrap_or(entry);
    path.starts_with('/').then_some(path)
}

impl Server {
    /// A server of weight 1.
    pub fn new(host: impl Into<String>, port: u16) -> Server {
        Server {
            host: host.into(),
            port,
            weight: 1,
        }
    }

    /// Parses a server entry as pylibmc takes one: a unix-domain socket's absolute path
    /// (`/run/memcached.sock`, or python-memcached's and Django's `unix:/run/memcached.sock`)
    /// is that path with port 0 and weight 1, as libmemcached names a socket server (its
    /// ketama points are then `path:0-N`, as libmemcached's); anything else is
    /// [`Server::parse`]'s.
    ///
    /// ```
    /// use newcache_placement::Server;
    /// let s = Server::parse_entry("unix:/run/memcached.sock").unwrap();
    /// assert_eq!((s.host.as_str(), s.port, s.weight), ("/run/memcached.sock", 0, 1));
    /// assert_eq!(Server::parse_entry("10.0.0.1:11212:3").unwrap().port, 11212);
    /// ```
    pub fn parse_entry(entry: &str) -> Result<Server, PlacementError> {
        match socket_path(entry) {
            Some(path) => Ok(Server {
                host: path.to_string(),
                port: 0,
                weight: 1,
            }),
            None => Server::parse(entry),
        }
    }

    /// Parses `host`, `host:port`, `host:port:weight`, `[v6addr]`, `[v6addr]:port` or
    /// `[v6addr]:port:weight` (port 11211 and weight 1 unless given).
    pub fn parse(entry: &str) -> Result<Server, PlacementError> {
        let entry = entry.trim();
        let bad = |reason: &str| PlacementError::BadServer {
            entry: entry.to_string(),
            reason: reason.to_string(),
        };
        let (host, rest) = if let Some(after) = entry.strip_prefix('[') {
            let (host, rest) = after
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ']'"))?;
            let rest = match rest {
                "" => None,
                r => Some(
                    r.strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' after ']'"))?,
                ),
            };
            (host, rest)
        } else {
            // An IPv6 address without brackets: its colons cannot be told from the port's.
            if looks_like_bare_ipv6(entry) {
                return Err(bad(
                    "an IPv6 address goes in brackets, its port after them ([::1]:11211)",
                ));
            }
            match entry.split_once(':') {
                Some((host, rest)) => (host, Some(rest)),
                None => (entry, None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let mut parts = rest.map(|r| r.split(':')).into_iter().flatten();
        let port = match parts.next() {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| bad(&format!("port {p:?} is not a number from 1 to 65535")))?,
        };
        let weight = match parts.next() {
            None => 1,
            Some(w) => w
                .parse::<u32>()
                .ok()
                .filter(|&w| (1..=MAX_WEIGHT).contains(&w))
                .ok_or_else(|| bad(&weight_refused(w)))?,
        };
        if parts.next().is_some() {
            return Err(bad(
                "expected host:port or host:port:weight (write IPv6 addresses as [addr]:port)",
            ));
        }
        Ok(Server {
            host: host.to_string(),
            port,
            weight,
        })
    }

    /// `host:port`, with brackets around an IPv6 address: what to connect to.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A behavior's boolean as pylibmc users write it: `1`/`0`, `true`/`false`, `yes`/`no`,
/// `on`/`off` (any case); an error naming the behavior otherwise.
pub fn parse_bool(name: &str, value: &str) -> Result<bool, PlacementError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(PlacementError::BadValue {
            name: name.to_string(),
            value: value.to_string(),
            expected: "a boolean (1/0, true/false)".into(),
        }),
    }
}

/// The placement behaviors, by pylibmc's names, as given (unset ones keep libmemcached's
/// defaults). [`Behaviors::settings`] resolves them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Behaviors {
    /// `hash`: the key hash.
    pub hash: Option<Hash>,
    /// `ketama_hash`: accepted for compatibility; libmemcached 1.1.4 does not use it to
    /// place keys (its ring points use the key hash, or MD5 when weighted).
    pub ketama_hash: Option<Hash>,
    /// `ketama`: on selects `consistent ketama`, off `modula`.
    pub ketama: Option<bool>,
    /// `ketama_weighted`: on sets the key hash to MD5 and selects `consistent weighted`; off
    /// does what `ketama` on does (libmemcached's quirk).
    pub ketama_weighted: Option<bool>,
    /// `distribution`.
    pub distribution: Option<Distribution>,
    /// `_sort_hosts`: sort servers by host then port before placing.
    pub sort_hosts: Option<bool>,
}

impl Behaviors {
    /// The behaviors' pylibmc names.
    pub const NAMES: [&'static str; 6] = [
        "hash",
        "ketama_hash",
        "ketama",
        "ketama_weighted",
        "distribution",
        "_sort_hosts",
    ];

    /// Sets one behavior from its value as text. `Ok(false)` when `name` is not a placement
    /// behavior (nothing changes); an error for a placement behavior with a bad value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool, PlacementError> {
        let bad = |expected: &str| PlacementError::BadValue {
            name: name.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        };
        let hash_names = || {
            Hash::ALL
                .iter()
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            "hash" | "ketama_hash" => {
                let hash =
                    Hash::parse(value).ok_or_else(|| bad(&format!("one of {}", hash_names())))?;
                if name == "hash" {
                    self.hash = Some(hash);
                } else {
                    self.ketama_hash = Some(hash);
                }
            }
            "ketama" => self.ketama = Some(parse_bool(name, value)?),
            "ketama_weighted" => self.ketama_weighted = Some(parse_bool(name, value)?),
            "distribution" => {
                let names: Vec<_> = Distribution::ALL.iter().map(|(_, n)| *n).collect();
                self.distribution = Some(
                    Distribution::parse(value)
                        .ok_or_else(|| bad(&format!("one of {}", names.join(", "))))?,
                );
            }
            "_sort_hosts" => self.sort_hosts = Some(parse_bool(name, value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Resolves the behaviors as libmemcached does when pylibmc sets them in its order
    /// (`hash`, `ketama_hash`, `ketama`, `ketama_weighted`, `distribution`, `_sort_hosts`) and
    /// then adds `servers`: a server of weight above 1 on a consistent distribution turns
    /// the weighted ring on.
    pub fn settings(&self, servers: &[Server]) -> Settings {
        let mut s = Settings::default();
        if let Some(hash) = self.hash {
            s.hash = hash;
        }
        let set_distribution = |s: &mut Settings, d: Distribution| {
            match d {
                Distribution::Consistent | Distribution::ConsistentKetama => s.weighted = false,
                Distribution::ConsistentWeighted => s.weighted = true,
                Distribution::Modula | Distribution::Random | Distribution::ConsistentKetamaSpy => {
                }
            }
            s.distribution = d;
        };
        match self.ketama {
            Some(true) => set_distribution(&mut s, Distribution::ConsistentKetama),
            Some(false) => set_distribution(&mut s, Distribution::Modula),
            None => {}
        }
        match self.ketama_weighted {
            Some(true) => {
                s.hash = Hash::Md5;
                set_distribution(&mut s, Distribution::ConsistentWeighted);
            }
            Some(false) => set_distribution(&mut s, Distribution::ConsistentKetama),
            None => {}
        }
        if let Some(d) = self.distribution {
            set_distribution(&mut s, d);
        }
        s.sort_hosts = self.sort_hosts.unwrap_or(false);
        if s.distribution.is_consistent() && servers.iter().any(|srv| srv.weight > 1) {
            s.weighted = true;
        }
        s
    }
}

/// Resolved placement: what a [`Ring`] is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    /// The distribution.
    pub distribution: Distribution,
    /// The key hash (also names the points of an unweighted ring).
    pub hash: Hash,
    /// Weighted ring: 160 MD5 points per server at equal weights, in proportion otherwise.
    pub weighted: bool,
    /// Servers sorted by host, then port, before placing.
    pub sort_hosts: bool,
}

/// One point of a ring: its hash value and the (placement-order) server it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Point {
    value: u32,
    server: u32,
}

/// A cluster's placement: servers plus [`Settings`], with the ketama continuum built when the
/// distribution is consistent.
#[derive(Debug)]
pub struct Ring {
    settings: Settings,
    /// Placement position -> index in the servers as given (differs under `_sort_hosts`).
    order: Vec<usize>,
    points: Vec<Point>,
    live: usize,
    random: AtomicU64,
}

impl Ring {
    /// The ring over every server.
    pub fn new(servers: &[Server], settings: &Settings) -> Ring {
        Ring::with_live(servers, settings, |_| true)
    }

    /// The ring over the servers for which `live(index)` is true (index into `servers`).
    /// Consistent distributions leave the others off the ring, as libmemcached does with
    /// ejected servers; modula and random keep every server (a dead one's keys fail).
    pub fn with_live(
        servers: &[Server],
        settings: &Settings,
        live: impl Fn(usize) -> bool,
    ) -> Ring {
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if settings.sort_hosts {
            order.sort_by(|&a, &b| match (servers.get(a), servers.get(b)) {
                (Some(a), Some(b)) => a.host.cmp(&b.host).then(a.port.cmp(&b.port)),
                _ => Ordering::Equal,
            });
        }
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (servers.len() as u64);
        let mut ring = Ring {
            settings: *settings,
            order,
            points: Vec::new(),
            live: 0,
            random: AtomicU64::new(seed),
        };
        ring.live = ring.order.iter().filter(|&&i| live(i)).count();
        if settings.distribution.is_consistent() {
            ring.build_continuum(servers, &live);
        }
        ring
    }

    fn build_continuum(&mut self, servers: &[Server], live: &impl Fn(usize) -> bool) {
        let placed: Vec<(u32, &Server)> = self
            .order
            .iter()
            .enumerate()
            .filter(|(_, &i)| live(i))
            .filter_map(|(pos, &i)| Some((u32::try_from(pos).ok()?, servers.get(i)?)))
            .collect();
        let total_weight: u64 = placed.iter().map(|(_, s)| u64::from(s.weight)).sum();
        let spy = self.settings.distribution == Distribution::ConsistentKetamaSpy;
        for &(pos, server) in &placed {
            let names = if self.settings.weighted {
                // libmemcached's float arithmetic, step for step, so the point count matches.
                let pct = server.weight as f32 / total_weight as f32;
                let quarter = POINTS_PER_SERVER_WEIGHTED as f32 / 4.0;
                (pct * quarter * placed.len() as f32 + 1e-10_f32).floor() as u32
            } else {
                POINTS_PER_SERVER
            };
            for i in 0..names {
                let name = if spy {
                    format!("/{}:{}-{}", server.host, server.port, i)
                } else if server.port == DEFAULT_PORT {
                    format!("{}-{}", server.host, i)
                } else {
                    format!("{}:{}-{}", server.host, server.port, i)
                };
                if self.settings.weighted {
                    let digest = hash::md5_digest(name.as_bytes());
                    for alignment in 0..4 {
                        self.points.push(Point {
                            value: hash::md5_word(&digest, alignment),
                            server: pos,
                        });
                    }
                } else {
                    // A hash this crate does not compute leaves the ring empty: the caller
                    // refuses such settings before building (see `Hash::is_computed`).
                    if let Some(value) = self.settings.hash.digest(name.as_bytes()) {
                        self.points.push(Point { value, server: pos });
                    }
                }
            }
        }
        self.points
            .sort_unstable_by(|a, b| a.value.cmp(&b.value).then(a.server.cmp(&b.server)));
    }

    /// The settings the ring was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Points on the continuum (0 for modula and random).
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// The server (index into the servers as given) that holds `key`. `None` when no server
    /// can take it: no server at all, every server off a consistent ring, or a key hash this
    /// crate does not compute.
    pub fn server_for_key(&self, key: &[u8]) -> Option<usize> {
        let count = self.order.len();
        if count == 0 {
            return None;
        }
        // libmemcached skips hashing with one server: hash 0.
        let hash = if count == 1 {
            0
        } else {
            self.settings.hash.digest(key)?
        };
        let position = match self.settings.distribution {
            Distribution::Modula => (hash as usize) % count,
            Distribution::Random => {
                // xorshift64*: placement need not be unpredictable, only spread.
                let mut x = self.random.load(AtomicOrdering::Relaxed);
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                self.random.store(x, AtomicOrdering::Relaxed);
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % count
            }
            _ => {
                if self.points.is_empty() || self.live == 0 {
                    return None;
                }
                let at = self.points.partition_point(|p| p.value < hash);
                let point = self.points.get(at).or_else(|| self.points.first())?;
                point.server as usize
            }
        };
        self.order.get(position).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<Server> {
        (0..n)
            .map(|i| Server::new(format!("10.0.0.{i}"), DEFAULT_PORT))
            .collect()
    }

    #[test]
    fn server_entries_parse_with_ports_weights_and_ipv6() {
        let s = Server::parse("cache1").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.weight), ("cache1", 11211, 1));
        let s = Server::parse("cache1:11212:3").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.weight), ("cache1", 11212, 3));
        let s = Server::parse("[::1]:5:2").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.weight), ("::1", 5, 2));
        assert_eq!(s.address(), "[::1]:5");
        assert_eq!(Server::parse("[::1]").unwrap().port, 11211);
        for bad in [
            "", ":1", "h:x", "h:0", "h:1:0", "h:1:x", "h:1:2:3", "[::1", "[::1]5",
        ] {
            assert!(Server::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_weight_is_one_pylibmc_reads_as_it_is() {
        // pylibmc parses a server's weight as an unsigned short: 70000 would reach its
        // libmemcached as 4464, and Python would place keys elsewhere.
        assert_eq!(Server::parse("h:1:65535").unwrap().weight, MAX_WEIGHT);
        for heavy in ["h:1:65536", "h:1:70000", "[::1]:1:3000000000"] {
            let e = Server::parse(heavy).unwrap_err().to_string();
            assert!(
                e.contains("from 1 to 65535") && e.contains("pylibmc"),
                "{e}"
            );
        }
    }

    #[test]
    fn behaviors_resolve_with_libmemcacheds_side_effects() {
        let none = servers(3);
        let mut b = Behaviors::default();
        assert_eq!(b.settings(&none), Settings::default());
        assert!(b.set("ketama", "1").unwrap());
        let s = b.settings(&none);
        assert_eq!(
            (s.distribution, s.hash, s.weighted),
            (Distribution::ConsistentKetama, Hash::Default, false)
        );

        let mut b = Behaviors::default();
        b.set("hash", "crc").unwrap();
        b.set("ketama_weighted", "true").unwrap();
        let s = b.settings(&none);
        assert_eq!(
            (s.distribution, s.hash, s.weighted),
            (Distribution::ConsistentWeighted, Hash::Md5, true)
        );

        let mut b = Behaviors::default();
        b.set("ketama_weighted", "false").unwrap();
        assert_eq!(
            b.settings(&none).distribution,
            Distribution::ConsistentKetama
        );

        // A weight above 1 turns a consistent ring weighted, but not modula.
        let mut weighted = servers(2);
        weighted[1].weight = 2;
        assert!(!Behaviors::default().settings(&weighted).weighted);
        let mut b = Behaviors::default();
        b.set("distribution", "consistent_ketama_spy").unwrap();
        assert!(b.settings(&weighted).weighted);

        assert!(
            !b.set("tcp_nodelay", "1").unwrap(),
            "not a placement behavior"
        );
        assert!(b.set("hash", "sha1").is_err());
        assert!(b.set("ketama", "maybe").is_err());
        assert!(b.set("distribution", "circle").is_err());
    }

    #[test]
    fn one_server_takes_every_key_and_none_takes_none() {
        for d in Distribution::ALL.map(|(d, _)| d) {
            let settings = Settings {
                distribution: d,
                ..Settings::default()
            };
            let ring = Ring::new(&servers(1), &settings);
            assert_eq!(ring.server_for_key(b"anything"), Some(0), "{d}");
            assert_eq!(Ring::new(&[], &settings).server_for_key(b"k"), None);
        }
    }

    #[test]
    fn rings_have_libmemcacheds_point_counts() {
        let consistent = Settings {
            distribution: Distribution::ConsistentKetama,
            ..Settings::default()
        };
        assert_eq!(Ring::new(&servers(3), &consistent).points(), 300);
        let weighted = Settings {
            weighted: true,
            ..consistent
        };
        assert_eq!(Ring::new(&servers(3), &weighted).points(), 480);
        let mut heavy = servers(2);
        heavy[0].weight = 3;
        // 3/4 and 1/4 of 2 x 160 points, in whole digests of four.
        assert_eq!(Ring::new(&heavy, &weighted).points(), 240 + 80);
        assert_eq!(Ring::new(&servers(3), &Settings::default()).points(), 0);
    }

    #[test]
    fn consistent_rings_move_few_keys_when_a_server_leaves() {
        let settings = Settings {
            distribution: Distribution::ConsistentKetama,
            ..Settings::default()
        };
        let all = servers(5);
        let full = Ring::new(&all, &settings);
        let without_2 = Ring::with_live(&all, &settings, |i| i != 2);
        let mut moved = 0;
        for i in 0..5000 {
            let key = format!("key:{i}");
            let before = full.server_for_key(key.as_bytes()).unwrap();
            let after = without_2.server_for_key(key.as_bytes()).unwrap();
            assert_ne!(after, 2, "an ejected server takes no keys");
            if before != 2 {
                assert_eq!(before, after, "keys of live servers stay put");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 500, "server 2 held {moved} of 5000 keys");
        assert_eq!(
            Ring::with_live(&all, &settings, |_| false).server_for_key(b"k"),
            None
        );
        // Modula keeps every server: a dead one's keys are not moved.
        let modula = Ring::with_live(&all, &Settings::default(), |i| i != 2);
        assert_eq!(
            modula.server_for_key(b"k"),
            Ring::new(&all, &Settings::default()).server_for_key(b"k")
        );
    }

    #[test]
    fn sorted_hosts_place_by_sorted_position_and_answer_original_indices() {
        let list = vec![
            Server::new("b", 1),
            Server::new("a", 2),
            Server::new("a", 1),
        ];
        let sorted = vec![list[2].clone(), list[1].clone(), list[0].clone()];
        let settings = Settings {
            sort_hosts: true,
            ..Settings::default()
        };
        let ring = Ring::new(&list, &settings);
        let reference = Ring::new(&sorted, &Settings::default());
        for i in 0..300 {
            let key = format!("k{i}");
            let got = ring.server_for_key(key.as_bytes()).unwrap();
            let want = reference.server_for_key(key.as_bytes()).unwrap();
            assert_eq!(list[got], sorted[want]);
        }
    }

    #[test]
    fn uncomputed_hashes_place_nothing_rather_than_guess() {
        let settings = Settings {
            hash: Hash::Jenkins,
            ..Settings::default()
        };
        assert_eq!(Ring::new(&servers(3), &settings).server_for_key(b"k"), None);
        assert!(!Hash::Murmur.is_computed() && Hash::Crc.is_computed());
    }
}
