//! Thundering-herd mitigation: the envelope codec and the stale policies.
//!
//! A value stored with a finite TTL and herd protection on is wrapped in an *envelope* that
//! carries its soft expiry (now + TTL); the item itself lives `herd_timeout` seconds longer,
//! so after the soft expiry there is still an old value to serve while one reader recomputes.
//! What a reader does with a stale envelope is a [`StalePolicy`]'s decision
//! ([`StaleAction`]): under [`Policy::Lease`], the default, it claims the refresh by a CAS
//! store of the same envelope with its soft expiry pushed forward, so exactly one reader wins
//! and recomputes and the others are served the old value; [`Policy::Reinsert`] is
//! django-newcache's scheme (re-store the bare old value for `herd_timeout` and report a miss,
//! which every reader that fetched the envelope before that re-store also does);
//! [`Policy::Early`] / [`Xfetch`] adds XFetch's early recomputation to lease; [`Policy::Meta`]
//! leaves the decision to memcached 1.6's meta protocol.
//!
//! Herd-protected items are marked by [`HERD_FLAG`] in the item's 32-bit flags, and their
//! state (soft expiry, compute time) rides in the flags' upper bits ([`Envelope::flags`]),
//! never in the value: the value's bytes and its type bits stay exactly what Python's
//! memcached clients write and read, so a Django app beside the Rust service reads the value
//! itself, and no user value can be mistaken for an envelope.
//!
//! This crate is pure logic: no I/O, and the clock is injectable ([`Clock`], [`ManualClock`]),
//! so every policy is tested without sleeping.
//!
//! ```
//! use newcache_herd::{read_flags, Carried, Envelope, Herd, ManualClock, Clock, ReadDecision, Ttl};
//!
//! let clock = ManualClock::at_secs(1_700_000_000);
//! let herd = Herd::new(60);
//! // Storing for 300 s: the item lives 360 s on the server, the flags say stale after 300.
//! let plan = herd.plan_store(Ttl::Seconds(300), true, clock.now_millis()).unwrap();
//! assert_eq!(plan.exptime, 360);
//! let soft = plan.soft_expiry_millis.expect("finite TTL with herd on is protected");
//!
//! let flags = 16 | Envelope::new(soft).flags(clock.now_millis(), 60); // 16: a Python str
//! let Some(Carried::Flags(envelope)) = read_flags(flags, clock.now_millis()) else { panic!() };
//! assert_eq!(envelope.soft_expiry_millis, soft);
//! assert_eq!(herd.on_read(&envelope, clock.now_millis()), ReadDecision::Fresh);
//!
//! clock.advance_secs(301);
//! assert_eq!(herd.on_read(&envelope, clock.now_millis()), ReadDecision::Stale { reinsert_exptime: 60 });
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The bit in an item's flags that marks a herd envelope (bit 8; bits 0-7 are the flags Python
/// clients use for the value's own type, and stay as they are inside the envelope).
pub const HERD_FLAG: u32 = 1 << 8;

/// Exptimes above this many seconds (30 days) are absolute Unix times to memcached.
pub const MAX_RELATIVE_EXPTIME: u64 = 60 * 60 * 24 * 30;

/// django-newcache's default herd timeout, in seconds.
pub const DEFAULT_HERD_TIMEOUT: u32 = 60;

/// A source of wall-clock time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;

    /// Whole seconds since the Unix epoch.
    fn now_secs(&self) -> u64 {
        self.now_millis() / 1000
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to, for tests. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `secs` seconds since the epoch.
    pub fn at_secs(secs: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(secs.saturating_mul(1000))))
    }

    /// Moves the clock forward.
    pub fn advance_millis(&self, millis: u64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }

    /// Moves the clock forward by whole seconds.
    pub fn advance_secs(&self, secs: u64) {
        self.advance_millis(secs.saturating_mul(1000));
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How long a value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Ttl {
    /// The cache's configured default (300 s unless configured otherwise).
    #[default]
    Default,
    /// Never expires (memcached exptime 0). Stored bare: there is nothing for a herd to wait on.
    Forever,
    /// This many seconds. Past 30 days the wire value becomes an absolute Unix time, as
    /// memcached requires. `Seconds(0)` means "expire at once" (Django's `timeout=0`).
    Seconds(u64),
}

impl Ttl {
    /// Resolves [`Ttl::Default`] against the cache's default.
    pub fn or_default(self, default: Ttl) -> Ttl {
        match self {
            Ttl::Default => default,
            other => other,
        }
    }
}

impl From<std::time::Duration> for Ttl {
    fn from(d: std::time::Duration) -> Self {
        Ttl::Seconds(d.as_secs())
    }
}

/// The latest absolute expiry memcached keeps, 2038-01-19 03:14:07 UTC: it reads exptimes as
/// signed 32-bit numbers, so a later time is negative to it and the item is gone at once.
pub const MAX_EXPTIME: u32 = i32::MAX as u32;

/// A TTL that ends past [`MAX_EXPTIME`]: memcached cannot keep the item that long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a TTL of {secs} s ends past 2038-01-19 03:14:07 UTC, the latest expiry memcached can keep (it reads expiry times as signed 32-bit numbers and would drop the item at once); use Ttl::Forever for a value that should not expire")]
pub struct TtlTooLong {
    /// The TTL asked for, in seconds.
    pub secs: u64,
}

/// The memcached exptime for an item that should live `secs` seconds from `now_secs`:
/// relative up to 30 days, an absolute Unix time beyond, and [`TtlTooLong`] past what
/// memcached can keep ([`MAX_EXPTIME`]). `secs == 0` gives 0 only through [`Ttl::Forever`];
/// callers map "expire at once" themselves.
pub fn wire_exptime(secs: u64, now_secs: u64) -> Result<u32, TtlTooLong> {
    let exptime = if secs <= MAX_RELATIVE_EXPTIME {
        secs
    } else {
        now_secs.saturating_add(secs)
    };
    u32::try_from(exptime)
        .ok()
        .filter(|e| *e <= MAX_EXPTIME)
        .ok_or(TtlTooLong { secs })
}

/// What to send for one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorePlan {
    /// Wrap the value in an envelope with this soft expiry (ms since epoch), or store it bare.
    pub soft_expiry_millis: Option<u64>,
    /// The item's exptime on the wire.
    pub exptime: u32,
    /// The TTL is zero: the value expires at once and should not be stored at all.
    pub expire_now: bool,
}

/// What a reader should do with an envelope it fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadDecision {
    /// Before its soft expiry: serve the value.
    Fresh,
    /// Past its soft expiry: report a miss to this reader (who recomputes) and store the bare
    /// old value again with this exptime, so the others keep being served it meanwhile.
    Stale {
        /// Exptime for the re-stored bare value (the herd timeout).
        reinsert_exptime: u32,
    },
}

/// Which stale policy a cache uses: what happens when readers meet a value past its soft
/// expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// django-newcache's scheme, kept for exact compatibility: the reader re-stores the bare
    /// old value for the herd timeout and reports a miss. Every reader that fetched the stale
    /// envelope before that re-store landed also reports a miss (the seed's race).
    Reinsert,
    /// Single winner on any memcached: the reader claims the refresh atomically (a CAS store
    /// of the same envelope with its soft expiry pushed forward by the herd timeout). Exactly
    /// one reader wins the CAS and reports a miss; everyone else is served the old value. A
    /// winner that never writes back is replaced after the herd timeout.
    #[default]
    Lease,
    /// XFetch (Vattani et al., VLDB 2015) on top of `Lease`: before the soft expiry, a reader
    /// recomputes early with a probability that grows as the expiry nears, scaled by how long
    /// the value took to compute (recorded in the envelope) and by `beta`
    /// ([`Herd::early_recompute`]); at the soft expiry, `Lease` applies.
    Early,
    /// memcached 1.6's own single winner, over the meta protocol (text transport): values are
    /// stored bare with TTL ttl + herd_timeout, and `mg ... R<herd_timeout>` hands the win to
    /// exactly one reader once the remaining TTL drops below the herd timeout (the moment
    /// the envelope would go stale); invalidation is `md ... I`. An envelope met under this
    /// policy (written by a cache on another policy) is handled as under `Lease`. The facade
    /// refuses it at build on a transport without the meta protocol, and switches a cache to
    /// `Lease` for good when its server refuses the first meta command (twemproxy, memcached
    /// before 1.6).
    Meta,
}

impl Policy {
    /// The policy's name, as the URL's `herd=` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Reinsert => "reinsert",
            Policy::Lease => "lease",
            Policy::Early => "early",
            Policy::Meta => "meta",
        }
    }

    /// Parses a name from the URL's `herd=`.
    pub fn from_name(name: &str) -> Option<Policy> {
        match name {
            "reinsert" => Some(Policy::Reinsert),
            "lease" => Some(Policy::Lease),
            "early" => Some(Policy::Early),
            "meta" => Some(Policy::Meta),
            _ => None,
        }
    }
}

/// What readers do with a value past (or near) its soft expiry: the one trait every stale
/// policy implements. The built-in policies are [`Policy`] (and [`Xfetch`] for `early` with a
/// chosen beta); implement it to plug in your own. Implementations decide only: the facade
/// does the round trips.
pub trait StalePolicy: Send + Sync + std::fmt::Debug {
    /// A short name for logs and the demo.
    fn name(&self) -> &str;

    /// What a reader at `now_millis` does with `envelope`. `u` is a fresh uniform draw in
    /// (0, 1] for probabilistic policies.
    fn decide(&self, herd: &Herd, envelope: &Envelope, now_millis: u64, u: f64) -> StaleAction;

    /// True when the server keeps the herd state (memcached 1.6's meta protocol): values are
    /// stored bare and reads follow the server's win flag instead of [`StalePolicy::decide`].
    fn server_side(&self) -> bool {
        false
    }
}

impl StalePolicy for Policy {
    fn name(&self) -> &str {
        Policy::name(*self)
    }

    fn decide(&self, herd: &Herd, envelope: &Envelope, now_millis: u64, u: f64) -> StaleAction {
        match self {
            Policy::Early => Xfetch::default().decide(herd, envelope, now_millis, u),
            policy => herd.stale_action(*policy, envelope, now_millis),
        }
    }

    fn server_side(&self) -> bool {
        *self == Policy::Meta
    }
}

/// `herd=early` with a chosen beta: XFetch before the soft expiry, [`Policy::Lease`] at it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Xfetch {
    /// XFetch's beta: 1.0 is the paper's optimum; larger recomputes earlier.
    pub beta: f64,
}

impl Default for Xfetch {
    fn default() -> Self {
        Xfetch { beta: 1.0 }
    }
}

impl StalePolicy for Xfetch {
    fn name(&self) -> &str {
        "early"
    }

    fn decide(&self, herd: &Herd, envelope: &Envelope, now_millis: u64, u: f64) -> StaleAction {
        match herd.stale_action(Policy::Early, envelope, now_millis) {
            StaleAction::Serve if herd.early_recompute(envelope, now_millis, self.beta, u) => {
                StaleAction::RecomputeEarly
            }
            action => action,
        }
    }
}

/// What a reader should do with an envelope it fetched, under a [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleAction {
    /// Before its soft expiry: serve the value.
    Serve,
    /// [`Policy::Reinsert`]: report a miss and store the bare old value with this exptime.
    ReinsertBare {
        /// Exptime of the re-stored bare value (the herd timeout).
        exptime: u32,
    },
    /// [`Policy::Lease`]: try to claim the refresh by CAS-storing this envelope (the same
    /// value) with this exptime. The reader whose CAS succeeds reports a miss and recomputes;
    /// a reader whose CAS fails is served the old value.
    Claim {
        /// The envelope to store, its soft expiry pushed forward by the herd timeout.
        envelope: Envelope,
        /// Exptime of the claimed item: twice the herd timeout, so that when a winner never
        /// writes back, the value is still there for the next claim.
        exptime: u32,
    },
    /// `early`: recompute ahead of the soft expiry; store nothing, the others are served.
    RecomputeEarly,
}

/// The herd timeout every policy works with, and the decisions built on it: how to store a
/// value ([`Herd::plan_store`]), what a reader does with an envelope ([`Herd::stale_action`],
/// [`Herd::early_recompute`]) and how to invalidate one ([`Herd::invalidated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Herd {
    /// Seconds an item outlives its soft expiry; also how long the re-stored old value lives.
    pub herd_timeout: u32,
}

impl Default for Herd {
    fn default() -> Self {
        Herd::new(DEFAULT_HERD_TIMEOUT)
    }
}

impl Herd {
    /// A herd policy with this timeout in seconds.
    pub fn new(herd_timeout: u32) -> Self {
        Herd { herd_timeout }
    }

    /// Plans a store of a value that should live `ttl` (already resolved: not
    /// [`Ttl::Default`], which is treated as [`Ttl::Forever`] here) with herd protection on or off.
    ///
    /// With herd on and a finite TTL, the value gets soft expiry now + ttl and the item lives
    /// ttl + herd_timeout (cut short at [`MAX_EXPTIME`] when only the herd timeout crosses
    /// it). Forever and herd-off values have no soft expiry. A TTL that ends past
    /// [`MAX_EXPTIME`] is [`TtlTooLong`].
    pub fn plan_store(
        &self,
        ttl: Ttl,
        herd: bool,
        now_millis: u64,
    ) -> Result<StorePlan, TtlTooLong> {
        let now_secs = now_millis / 1000;
        Ok(match ttl {
            Ttl::Default | Ttl::Forever => StorePlan {
                soft_expiry_millis: None,
                exptime: 0,
                expire_now: false,
            },
            Ttl::Seconds(0) => StorePlan {
                soft_expiry_millis: None,
                exptime: 0,
                expire_now: true,
            },
            Ttl::Seconds(secs) if herd && self.herd_timeout > 0 => {
                wire_exptime(secs, now_secs)?;
                let with_herd = secs.saturating_add(u64::from(self.herd_timeout));
                StorePlan {
                    soft_expiry_millis: Some(now_millis.saturating_add(secs.saturating_mul(1000))),
                    exptime: wire_exptime(with_herd, now_secs).unwrap_or(MAX_EXPTIME),
                    expire_now: false,
                }
            }
            Ttl::Seconds(secs) => StorePlan {
                soft_expiry_millis: None,
                exptime: wire_exptime(secs, now_secs)?,
                expire_now: false,
            },
        })
    }

    /// Decides what a reader does with an envelope fetched at `now_millis`.
    pub fn on_read(&self, envelope: &Envelope, now_millis: u64) -> ReadDecision {
        if now_millis < envelope.soft_expiry_millis {
            ReadDecision::Fresh
        } else {
            ReadDecision::Stale {
                reinsert_exptime: self.herd_timeout.max(1),
            }
        }
    }
}

impl Herd {
    /// Decides what a reader does with an envelope fetched at `now_millis` under `policy`.
    pub fn stale_action(
        &self,
        policy: Policy,
        envelope: &Envelope,
        now_millis: u64,
    ) -> StaleAction {
        match (self.on_read(envelope, now_millis), policy) {
            (ReadDecision::Fresh, _) => StaleAction::Serve,
            (ReadDecision::Stale { reinsert_exptime }, Policy::Reinsert) => {
                StaleAction::ReinsertBare {
                    exptime: reinsert_exptime,
                }
            }
            (
                ReadDecision::Stale { reinsert_exptime },
                Policy::Lease | Policy::Early | Policy::Meta,
            ) => StaleAction::Claim {
                envelope: Envelope {
                    soft_expiry_millis: now_millis
                        .saturating_add(u64::from(reinsert_exptime).saturating_mul(1000)),
                    compute_millis: envelope.compute_millis,
                },
                exptime: reinsert_exptime.saturating_mul(2),
            },
        }
    }

    /// XFetch's test for a fresh envelope: recompute now when
    /// `now - compute * beta * ln(u) >= soft_expiry`, with `u` uniform in (0, 1]. The larger
    /// `beta` (1.0 is the paper's optimum) and the longer the value takes to compute, the
    /// earlier recomputation starts. A value of unknown compute time is never recomputed
    /// early.
    pub fn early_recompute(&self, envelope: &Envelope, now_millis: u64, beta: f64, u: f64) -> bool {
        if envelope.compute_millis == 0 || !(u > 0.0 && u <= 1.0) || beta <= 0.0 {
            return false;
        }
        let lead = f64::from(envelope.compute_millis) * beta * -u.ln();
        now_millis as f64 + lead >= envelope.soft_expiry_millis as f64
    }

    /// The envelope that marks a value stale at once ([`Policy`]-independent invalidation):
    /// the next reader recomputes under the cache's policy, the others are served the old
    /// value meanwhile. Store it with [`Herd::invalidated_exptime`].
    pub fn invalidated(&self, envelope: Option<&Envelope>, now_millis: u64) -> Envelope {
        Envelope {
            // A second back: stale at once even after rounding to whole seconds.
            soft_expiry_millis: now_millis.saturating_sub(1000),
            compute_millis: envelope.map_or(0, |e| e.compute_millis),
        }
    }

    /// How long an invalidated value stays available to be served stale: twice the herd
    /// timeout (one for the claim, one for the winner to write back).
    pub fn invalidated_exptime(&self) -> u32 {
        self.herd_timeout.max(1).saturating_mul(2)
    }
}

/// A herd-protected value's state: when it goes stale and how long it took to compute.
///
/// Since format 2 it travels in the item's flags, never in the value, so the value's bytes
/// are exactly what Python clients store and read ([`Envelope::flags`],
/// [`read_flags`]). Bits 0-7 stay the value's own type, bit 8 is [`HERD_FLAG`], bits 9-10
/// newcache's codecs, and bits 11-31 hold the state:
///
/// | bits | meaning |
/// |---|---|
/// | 11-12 | unit of the soft expiry: 1 = 1 s, 2 = 64 s, 3 = 4096 s; 0 = format 1 (a 13-byte header in front of the value, read for compatibility) |
/// | 13-15 | compute-time class for XFetch: 0 unknown, k = 1..7 about `10 * 4^(k-1)` ms |
/// | 16-31 | the soft expiry in units, modulo 2^16: the reader takes the one nearest its clock |
///
/// The writer picks the smallest unit whose window (2^15 units either way) covers the TTL
/// and twice the herd timeout: TTLs up to 9 h are exact to the second (rounded up: a value
/// is never stale before its TTL), up to 24 days to 64 s and beyond to 4096 s (rounded
/// down, so the value goes stale before the item expires). A soft expiry past the widest
/// window (4.25 years) is brought forward to its edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// When the value goes stale, in ms since the Unix epoch.
    pub soft_expiry_millis: u64,
    /// How long the value took to compute, in ms (0 when unknown).
    pub compute_millis: u32,
}

/// Why a value marked as herd-protected could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A format-1 value with fewer bytes than its header needs.
    #[error("herd envelope truncated: {len} bytes, the header needs {HEADER_LEN}")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// A format-1 header version this build does not know (written by a newer newcache).
    #[error(
        "herd envelope format {0} is unknown to this newcache; was it written by a newer version?"
    )]
    UnknownVersion(u8),
}

const VERSION: u8 = 1;
/// Bytes the format-1 header took before the value (read for compatibility, never written).
pub const HEADER_LEN: usize = 13;

/// The flag bits that hold a herd-protected item's state (bits 11-31).
pub const STATE_MASK: u32 = !0 << 11;
const UNIT_SHIFT: u32 = 11;
const COMPUTE_SHIFT: u32 = 13;
const EXPIRY_SHIFT: u32 = 16;
/// Seconds per unit for unit codes 1, 2 and 3: powers of two, so a reader's clock is turned
/// into units by a shift.
const UNITS: [u64; 3] = [1, 64, 4096];
const _: () =
    assert!(UNITS[0].is_power_of_two() && UNITS[1].is_power_of_two() && UNITS[2].is_power_of_two());
/// Soft expiries are decoded within this many units either side of the reader's clock.
const HALF_WINDOW: u64 = 1 << 15;

/// Where a herd-protected item keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// In the flags (format 2): the value is bare.
    Flags(Envelope),
    /// In a 13-byte header in front of the value (format 1, written by newcache 0.1 before
    /// the flags format): open it with [`Envelope::decode`].
    Header,
}

/// The herd state an item's flags carry, read at `now_millis`; `None` when the flags do not
/// mark a herd-protected value.
pub fn read_flags(flags: u32, now_millis: u64) -> Option<Carried> {
    if flags & HERD_FLAG == 0 {
        return None;
    }
    let unit_code = (flags >> UNIT_SHIFT) & 0b11;
    let Some(&unit) = UNITS.get((unit_code as usize).wrapping_sub(1)) else {
        return Some(Carried::Header);
    };
    let class = (flags >> COMPUTE_SHIFT) & 0b111;
    let stored = u64::from(flags >> EXPIRY_SHIFT);
    // A unit is a power of two seconds: a shift, not a division, on every read.
    let now_units = (now_millis / 1000) >> unit.trailing_zeros();
    // The largest count of units <= now congruent to the stored one, or the next one up
    // when that lies more than half a window back.
    let mut soft_units = now_units.wrapping_sub(now_units.wrapping_sub(stored) & 0xffff);
    if now_units.wrapping_sub(soft_units) >= HALF_WINDOW {
        soft_units = soft_units.wrapping_add(1 << 16);
    }
    Some(Carried::Flags(Envelope {
        soft_expiry_millis: soft_units.saturating_mul(unit).saturating_mul(1000),
        compute_millis: compute_of_class(class),
    }))
}

/// The value flags of an item: its flags without the herd bit and the herd state.
pub fn value_flags(flags: u32) -> u32 {
    if flags & HERD_FLAG == 0 {
        flags
    } else {
        flags & !(HERD_FLAG | STATE_MASK)
    }
}

fn compute_of_class(class: u32) -> u32 {
    match class {
        0 => 0,
        k => 10u32.saturating_mul(4u32.saturating_pow(k.saturating_sub(1))),
    }
}

fn class_of_compute(millis: u32) -> u32 {
    if millis == 0 {
        return 0;
    }
    // The class whose representative is nearest on a log scale (geometric midpoints).
    (1..=7u32)
        .find(|k| f64::from(millis) < f64::from(compute_of_class(*k)) * 2.0)
        .unwrap_or(7)
}

impl Envelope {
    /// An envelope with this soft expiry and an unknown compute time.
    pub fn new(soft_expiry_millis: u64) -> Self {
        Envelope {
            soft_expiry_millis,
            compute_millis: 0,
        }
    }

    /// The flag bits ([`HERD_FLAG`] and the state) that carry this envelope, for an item
    /// written at `now_millis` by a cache whose herd timeout is `herd_timeout` seconds. OR
    /// them into the value's own flags.
    pub fn flags(&self, now_millis: u64, herd_timeout: u32) -> u32 {
        let ahead_secs = self
            .soft_expiry_millis
            .saturating_sub(now_millis)
            .div_ceil(1000);
        // The window must also reach back over the item's life after its soft expiry.
        let span = ahead_secs.max(u64::from(herd_timeout).saturating_mul(2).saturating_add(2));
        let (code, unit) = UNITS
            .iter()
            .zip(1u32..)
            .find(|(unit, _)| span < (HALF_WINDOW - 2) * **unit)
            .map_or((3, 4096), |(unit, code)| (code, *unit));
        let limit_millis = now_millis.saturating_add((HALF_WINDOW - 2) * unit * 1000);
        let soft = self.soft_expiry_millis.min(limit_millis);
        let soft_units = if unit == 1 {
            // Never stale before the TTL asked for.
            soft.div_ceil(1000)
        } else {
            // Stale before the item expires, however coarse the unit.
            soft / 1000 / unit
        };
        HERD_FLAG
            | (code << UNIT_SHIFT)
            | (class_of_compute(self.compute_millis) << COMPUTE_SHIFT)
            | (((soft_units & 0xffff) as u32) << EXPIRY_SHIFT)
    }

    /// Appends a format-1 header and then `payload` to `out` (newcache 0.1's layout, which
    /// it no longer writes; for tests of reading old values).
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.reserve(HEADER_LEN + payload.len());
        out.push(VERSION);
        out.extend_from_slice(&self.soft_expiry_millis.to_be_bytes());
        out.extend_from_slice(&self.compute_millis.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// Splits a format-1 value ([`Carried::Header`]) into its envelope and the value.
    ///
    /// Layout (big-endian): format version `1` (1 byte), soft expiry in ms since the epoch
    /// (8 bytes), compute time in ms (4 bytes); then the value.
    pub fn decode(bytes: &[u8]) -> Result<(Envelope, &[u8]), EnvelopeError> {
        let (header, payload) = bytes
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(EnvelopeError::Truncated { len: bytes.len() })?;
        let [version, rest @ ..] = header;
        if *version != VERSION {
            return Err(EnvelopeError::UnknownVersion(*version));
        }
        let (expiry, compute) = rest.split_at(8);
        let soft_expiry_millis = u64::from_be_bytes(expiry.try_into().unwrap_or([0; 8]));
        let compute_millis = u32::from_be_bytes(compute.try_into().unwrap_or([0; 4]));
        Ok((
            Envelope {
                soft_expiry_millis,
                compute_millis,
            },
            payload,
        ))
    }
}

/// True when an item's flags mark a herd-protected value.
pub fn is_enveloped(flags: u32) -> bool {
    flags & HERD_FLAG != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn a_finite_ttl_with_herd_on_is_enveloped_and_lives_herd_timeout_longer() {
        let plan = Herd::new(60)
            .plan_store(Ttl::Seconds(300), true, NOW * 1000 + 250)
            .unwrap();
        assert_eq!(plan.exptime, 360);
        assert_eq!(plan.soft_expiry_millis, Some((NOW + 300) * 1000 + 250));
        assert!(!plan.expire_now);
    }

    #[test]
    fn forever_and_herd_off_are_stored_bare() {
        let herd = Herd::new(60);
        let forever = herd.plan_store(Ttl::Forever, true, NOW * 1000).unwrap();
        assert_eq!((forever.soft_expiry_millis, forever.exptime), (None, 0));
        let off = herd
            .plan_store(Ttl::Seconds(300), false, NOW * 1000)
            .unwrap();
        assert_eq!((off.soft_expiry_millis, off.exptime), (None, 300));
        let zero_timeout = Herd::new(0)
            .plan_store(Ttl::Seconds(300), true, NOW * 1000)
            .unwrap();
        assert_eq!(zero_timeout.soft_expiry_millis, None);
    }

    #[test]
    fn ttls_past_30_days_become_absolute_unix_times() {
        assert_eq!(wire_exptime(MAX_RELATIVE_EXPTIME, NOW), Ok(2_592_000));
        assert_eq!(
            wire_exptime(MAX_RELATIVE_EXPTIME + 1, NOW),
            Ok((NOW + MAX_RELATIVE_EXPTIME + 1) as u32)
        );
        // memcached reads exptimes as signed 32-bit: past 2038 is refused, never sent.
        let to_2038 = u64::from(MAX_EXPTIME) - NOW;
        assert_eq!(wire_exptime(to_2038, NOW), Ok(MAX_EXPTIME));
        assert_eq!(
            wire_exptime(to_2038 + 1, NOW),
            Err(TtlTooLong { secs: to_2038 + 1 })
        );
        assert_eq!(
            wire_exptime(u64::MAX, NOW),
            Err(TtlTooLong { secs: u64::MAX })
        );
        let herd = Herd::new(60);
        assert!(herd
            .plan_store(Ttl::Seconds(16 * 365 * 86_400), true, NOW * 1000)
            .is_err());
        assert!(herd
            .plan_store(Ttl::Seconds(u64::MAX), false, NOW * 1000)
            .is_err());
        // Only the herd timeout crosses the line: the item lives to the last second it can.
        let plan = herd
            .plan_store(Ttl::Seconds(to_2038 - 10), true, NOW * 1000)
            .unwrap();
        assert_eq!(plan.exptime, MAX_EXPTIME);
        assert_eq!(plan.soft_expiry_millis, Some((NOW + to_2038 - 10) * 1000));
        // 30 days minus 30 s, plus the herd timeout, crosses the line.
        let plan = Herd::new(60)
            .plan_store(Ttl::Seconds(MAX_RELATIVE_EXPTIME - 30), true, NOW * 1000)
            .unwrap();
        assert_eq!(plan.exptime, (NOW + MAX_RELATIVE_EXPTIME + 30) as u32);
    }

    #[test]
    fn zero_ttl_expires_at_once() {
        let plan = Herd::new(60)
            .plan_store(Ttl::Seconds(0), true, NOW * 1000)
            .unwrap();
        assert!(plan.expire_now);
    }

    #[test]
    fn the_first_read_after_soft_expiry_is_stale_and_reinserts_for_herd_timeout() {
        let clock = ManualClock::at_secs(NOW);
        let herd = Herd::new(45);
        let plan = herd
            .plan_store(Ttl::Seconds(10), true, clock.now_millis())
            .unwrap();
        let env = Envelope::new(plan.soft_expiry_millis.unwrap());
        clock.advance_millis(9_999);
        assert_eq!(herd.on_read(&env, clock.now_millis()), ReadDecision::Fresh);
        clock.advance_millis(1);
        assert_eq!(
            herd.on_read(&env, clock.now_millis()),
            ReadDecision::Stale {
                reinsert_exptime: 45
            }
        );
    }

    #[test]
    fn format_1_headers_are_still_read_and_reject_garbage() {
        let env = Envelope {
            soft_expiry_millis: 0x0102_0304_0506_0708,
            compute_millis: 77,
        };
        let mut out = b"x".to_vec();
        env.encode(b"payload", &mut out);
        assert_eq!(out.len(), 1 + HEADER_LEN + 7);
        assert_eq!(Envelope::decode(&out[1..]), Ok((env, &b"payload"[..])));
        assert_eq!(
            Envelope::decode(&out[1..5]),
            Err(EnvelopeError::Truncated { len: 4 })
        );
        let mut bad = out[1..].to_vec();
        bad[0] = 9;
        assert_eq!(
            Envelope::decode(&bad),
            Err(EnvelopeError::UnknownVersion(9))
        );
        for len in 0..HEADER_LEN {
            assert!(Envelope::decode(&vec![1u8; len]).is_err());
        }
        // Format 1 set the herd bit and nothing above it.
        assert_eq!(read_flags(16 | HERD_FLAG, 0), Some(Carried::Header));
    }

    fn round_trip(soft: u64, now: u64, herd: u32, read_at: u64) -> Envelope {
        let flags = Envelope::new(soft).flags(now, herd);
        assert_eq!(
            value_flags(16 | flags),
            16,
            "the state leaves the type bits alone"
        );
        match read_flags(16 | flags, read_at) {
            Some(Carried::Flags(env)) => env,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_soft_expiry_rides_in_the_flags_exact_to_the_second_up_to_9_hours() {
        let now = NOW * 1000 + 250;
        for ttl in [1u64, 2, 59, 300, 3_600, 9 * 3_600] {
            let soft = now + ttl * 1000;
            // Rounded up to the second: never stale before the TTL.
            let expect = soft.div_ceil(1000) * 1000;
            for read_at in [now, now + ttl * 500, soft, soft + 60_000, soft + 120_000] {
                assert_eq!(
                    round_trip(soft, now, 60, read_at).soft_expiry_millis,
                    expect,
                    "ttl {ttl} read at +{}",
                    read_at - now
                );
            }
        }
    }

    #[test]
    fn long_ttls_round_down_to_coarser_units_and_stay_unambiguous() {
        let now = NOW * 1000;
        let day = 86_400_000u64;
        for (ttl, unit) in [(day, 64_000u64), (20 * day, 64_000), (300 * day, 4_096_000)] {
            let soft = now + ttl;
            for read_at in [now, now + ttl / 2, soft, soft + 100_000] {
                let got = round_trip(soft, now, 60, read_at).soft_expiry_millis;
                assert!(
                    got <= soft && soft - got < unit,
                    "{ttl} {read_at}: {got} vs {soft}"
                );
            }
        }
        // Past the widest window (4.25 years) the soft expiry comes forward to its edge.
        let got = round_trip(u64::MAX, now, 60, now).soft_expiry_millis;
        assert!(
            got > now + 4 * 365 * day && got < now + 5 * 365 * day,
            "{got}"
        );
    }

    #[test]
    fn a_large_herd_timeout_widens_the_window_backwards() {
        // A stale item lives up to twice the herd timeout after its soft expiry; it must
        // still read as past, not as 18 hours ahead.
        let now = NOW * 1000;
        let herd = 20_000; // seconds
        let soft = now + 60_000;
        let later = soft + 2 * u64::from(herd) * 1000;
        let got = round_trip(soft, now, herd, later).soft_expiry_millis;
        assert!(got <= soft && soft - got < 64_000, "{got} vs {soft}");
    }

    #[test]
    fn compute_times_are_kept_within_a_factor_of_two() {
        assert_eq!(round_trip(NOW * 1000, NOW * 1000, 60, 0).compute_millis, 0);
        for ms in [1u32, 10, 35, 100, 700, 3_000, 20_000, 100_000] {
            let flags = Envelope {
                soft_expiry_millis: NOW * 1000,
                compute_millis: ms,
            }
            .flags(NOW * 1000, 60);
            let Some(Carried::Flags(env)) = read_flags(flags, NOW * 1000) else {
                panic!()
            };
            let ratio = f64::from(env.compute_millis) / f64::from(ms);
            assert!(
                !(10..=40_960).contains(&ms) || (0.5..=2.0).contains(&ratio),
                "{ms} -> {}",
                env.compute_millis
            );
            assert!(env.compute_millis > 0);
        }
    }

    #[test]
    fn flags_without_the_herd_bit_carry_nothing() {
        assert_eq!(read_flags(16, NOW * 1000), None);
        assert_eq!(read_flags(0xffff_0000, NOW * 1000), None);
        assert_eq!(value_flags(0xffff_0010), 0xffff_0010);
    }

    #[test]
    fn the_flag_bit_is_bit_8() {
        assert_eq!(HERD_FLAG, 0x100);
        assert!(is_enveloped(16 | HERD_FLAG));
        assert!(!is_enveloped(16));
        assert!(!is_enveloped(0xff));
    }

    #[test]
    fn lease_claims_a_stale_envelope_by_pushing_its_soft_expiry() {
        let clock = ManualClock::at_secs(NOW);
        let herd = Herd::new(30);
        let env = Envelope {
            soft_expiry_millis: clock.now_millis() + 5_000,
            compute_millis: 120,
        };
        assert_eq!(
            herd.stale_action(Policy::Lease, &env, clock.now_millis()),
            StaleAction::Serve
        );
        clock.advance_secs(6);
        let now = clock.now_millis();
        let StaleAction::Claim { envelope, exptime } = herd.stale_action(Policy::Lease, &env, now)
        else {
            panic!("a stale envelope is claimed under lease")
        };
        assert_eq!(envelope.soft_expiry_millis, now + 30_000);
        assert_eq!(envelope.compute_millis, 120);
        assert_eq!(exptime, 60);
        // Readers that see the claimed envelope are served until the lease runs out...
        assert_eq!(
            herd.stale_action(Policy::Lease, &envelope, now + 29_999),
            StaleAction::Serve
        );
        // ...and a winner that never wrote back is replaced by the next claim.
        assert!(matches!(
            herd.stale_action(Policy::Lease, &envelope, now + 30_000),
            StaleAction::Claim { .. }
        ));
    }

    #[test]
    fn reinsert_keeps_the_seeds_behaviour() {
        let herd = Herd::new(60);
        let env = Envelope::new(NOW * 1000);
        assert_eq!(
            herd.stale_action(Policy::Reinsert, &env, NOW * 1000),
            StaleAction::ReinsertBare { exptime: 60 }
        );
        assert_eq!(
            herd.stale_action(Policy::Reinsert, &env, NOW * 1000 - 1),
            StaleAction::Serve
        );
    }

    #[test]
    fn xfetch_recomputes_early_more_often_as_the_expiry_nears() {
        let herd = Herd::new(60);
        let env = Envelope {
            soft_expiry_millis: 100_000,
            compute_millis: 1_000,
        };
        // u = e^-1: the lead is exactly compute * beta.
        let u = (-1.0f64).exp();
        assert!(!herd.early_recompute(&env, 98_999, 1.0, u));
        assert!(herd.early_recompute(&env, 99_001, 1.0, u));
        assert!(
            herd.early_recompute(&env, 97_001, 3.0, u),
            "a larger beta starts earlier"
        );
        assert!(!herd.early_recompute(&env, 50_000, 1.0, 0.5));
        // Over many draws, the share that recomputes rises as the expiry nears.
        let share = |now| {
            (1..=1000)
                .filter(|i| herd.early_recompute(&env, now, 1.0, f64::from(*i) / 1000.0))
                .count()
        };
        let (far, near) = (share(97_000), share(99_500));
        assert!(far < near, "{far} < {near}");
        assert!(far > 0 && near < 1000);
        // Unknown compute time, or nonsense inputs: never early.
        assert!(!herd.early_recompute(&Envelope::new(100_000), 99_999, 1.0, 0.01));
        assert!(!herd.early_recompute(&env, 99_999, 1.0, 0.0));
        assert!(!herd.early_recompute(&env, 99_999, -1.0, 0.5));
        // At the soft expiry, early behaves as lease.
        assert!(matches!(
            herd.stale_action(Policy::Early, &env, 100_000),
            StaleAction::Claim { .. }
        ));
    }

    #[test]
    fn policies_decide_through_one_trait() {
        let herd = Herd::new(60);
        let env = Envelope {
            soft_expiry_millis: 100_000,
            compute_millis: 1_000,
        };
        let policies: Vec<Box<dyn StalePolicy>> = vec![
            Box::new(Policy::Reinsert),
            Box::new(Policy::Lease),
            Box::new(Policy::Meta),
            Box::new(Xfetch { beta: 3.0 }),
        ];
        let u = (-1.0f64).exp();
        let near: Vec<StaleAction> = policies
            .iter()
            .map(|p| p.decide(&herd, &env, 97_500, u))
            .collect();
        assert_eq!(near[..3], [StaleAction::Serve; 3]);
        assert_eq!(near[3], StaleAction::RecomputeEarly);
        let stale: Vec<StaleAction> = policies
            .iter()
            .map(|p| p.decide(&herd, &env, 100_000, u))
            .collect();
        assert_eq!(stale[0], StaleAction::ReinsertBare { exptime: 60 });
        assert!(stale[1..]
            .iter()
            .all(|a| matches!(a, StaleAction::Claim { .. })));
        assert_eq!(
            policies
                .iter()
                .map(|p| (p.name().to_string(), p.server_side()))
                .collect::<Vec<_>>(),
            [
                ("reinsert".into(), false),
                ("lease".into(), false),
                ("meta".into(), true),
                ("early".into(), false)
            ]
        );
    }

    #[test]
    fn invalidation_makes_any_envelope_stale_at_once() {
        let herd = Herd::new(45);
        let env = Envelope {
            soft_expiry_millis: u64::MAX,
            compute_millis: 9,
        };
        let now = NOW * 1000 + 999;
        let stale = herd.invalidated(Some(&env), now);
        assert_eq!(stale.compute_millis, 9);
        let Some(Carried::Flags(read)) = read_flags(stale.flags(now, 45), now) else {
            panic!()
        };
        assert!(matches!(
            herd.stale_action(Policy::Lease, &read, now),
            StaleAction::Claim { .. }
        ));
        assert_eq!(herd.invalidated_exptime(), 90);
        assert_eq!(Herd::new(0).invalidated_exptime(), 2);
    }

    #[test]
    fn policies_have_url_names() {
        for p in [Policy::Reinsert, Policy::Lease, Policy::Early, Policy::Meta] {
            assert_eq!(Policy::from_name(p.name()), Some(p));
        }
        assert_eq!(Policy::from_name("nope"), None);
        assert_eq!(Policy::default(), Policy::Lease);
    }

    #[test]
    fn the_system_clock_reads_the_present() {
        let now = SystemClock.now_secs();
        assert!(now > NOW, "{now}");
    }
}
