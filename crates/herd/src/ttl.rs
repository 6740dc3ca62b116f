//! How long a value lives ([`Ttl`]) and the exptime memcached is sent for it: relative up to
//! 30 days, absolute beyond, refused past 2038 ([`TtlTooLong`]); and the plan of one store.

/// Exptimes above this many seconds (30 days) are absolute Unix times to memcached.
pub const MAX_RELATIVE_EXPTIME: u64 = 60 * 60 * 24 * 30;

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

/// Whole seconds, rounded up: memcached counts in seconds, and a duration under one second
/// is a value that should live a moment, not `Seconds(0)` ("expire at once", which deletes
/// it). Only [`Duration::ZERO`](std::time::Duration::ZERO) is `Seconds(0)`.
///
/// ```
/// use std::time::Duration;
/// use newcache_herd::Ttl;
///
/// assert_eq!(Ttl::from(Duration::from_millis(500)), Ttl::Seconds(1));
/// assert_eq!(Ttl::from(Duration::from_millis(1500)), Ttl::Seconds(2));
/// assert_eq!(Ttl::from(Duration::from_secs(60)), Ttl::Seconds(60));
/// assert_eq!(Ttl::from(Duration::ZERO), Ttl::Seconds(0));
/// ```
impl From<std::time::Duration> for Ttl {
    fn from(d: std::time::Duration) -> Self {
        let whole = d.as_secs();
        Ttl::Seconds(if d.subsec_nanos() > 0 {
            whole.saturating_add(1)
        } else {
            whole
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::herd::Herd;

    const NOW: u64 = 1_700_000_000;

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
}
