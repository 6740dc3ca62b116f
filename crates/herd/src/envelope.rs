//! The envelope: a herd-protected item's state (soft expiry, compute time) carried in its
//! flags, and the flag bits and how they are read.

/// The bit in an item's flags that marks a herd envelope (bit 8; bits 0-7 are the flags Python
/// clients use for the value's own type, and stay as they are inside the envelope).
pub const HERD_FLAG: u32 = 1 << 8;

/// A herd-protected value's state: when it goes stale and how long it took to compute.
///
/// It travels in the item's flags, never in the value, so the value's bytes are exactly
/// what Python clients store and read ([`Envelope::flags`],
/// [`read_flags`]). Bits 0-7 stay the value's own type, bit 8 is [`HERD_FLAG`], bits 9-10
/// newcache's codecs, and bits 11-31 hold the state:
///
/// | bits | meaning |
/// |---|---|
/// | 11-12 | unit of the soft expiry: 1 = 1 s, 2 = 64 s, 3 = 4096 s; 0 = no herd state (bit 8 is then another application's, and the flags are the value's own) |
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

/// The longest herd timeout, in seconds (4 h 33 min): the longest for which the soft expiry
/// stays exact to the second whatever the TTL up to 9 hours. The window the flags encode
/// must reach back over the item's life past its soft expiry (the herd timeout), so a longer
/// one needs a coarser unit, and a soft expiry rounded to 64 or 4096 seconds is as wrong for
/// a short TTL either way: rounded down, a 30-second value is stale at once (the cache stops
/// caching); rounded up, it is served fresh for up to an hour. A cache refuses a longer
/// `herd_timeout` when it is built.
pub const MAX_HERD_TIMEOUT: u32 = ((HALF_WINDOW - 5) / 2) as u32;

/// The herd state an item's flags carry, read at `now_millis`; `None` when the flags do not
/// mark a herd-protected value: without [`HERD_FLAG`], or with it and no unit (bits 11-12
/// clear), which newcache never writes: bit 8 is then another application's, and its
/// value is read as stored (a value of its own is never taken for newcache's, nor cut).
pub fn read_flags(flags: u32, now_millis: u64) -> Option<Envelope> {
    if flags & HERD_FLAG == 0 {
        return None;
    }
    let unit_code = (flags >> UNIT_SHIFT) & 0b11;
    let &unit = UNITS.get((unit_code as usize).wrapping_sub(1))?;
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
    Some(Envelope {
        soft_expiry_millis: soft_units.saturating_mul(unit).saturating_mul(1000),
        compute_millis: compute_of_class(class),
    })
}

/// The value flags of an item: its flags without the herd bit and the herd state, when
/// they carry one ([`is_enveloped`]); else the flags as they are.
pub fn value_flags(flags: u32) -> u32 {
    if is_enveloped(flags) {
        flags & !(HERD_FLAG | STATE_MASK)
    } else {
        flags
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
}

/// True when an item's flags carry a herd-protected value's state: [`HERD_FLAG`] and a
/// unit in bits 11-12 (every envelope newcache writes has both).
pub fn is_enveloped(flags: u32) -> bool {
    flags & HERD_FLAG != 0 && flags & (0b11 << UNIT_SHIFT) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn the_herd_bit_without_a_unit_is_another_applications_and_carries_nothing() {
        // newcache 0.1 before its release kept the state in a header in front of the value
        // and marked it so; nothing writes that now, and another application's bit 8 is
        // not taken for it (its value was cut by 13 bytes, or failed).
        for flags in [
            HERD_FLAG,
            16 | HERD_FLAG,
            16 | HERD_FLAG | 0xffff_0000 | 0x7 << 13,
        ] {
            assert_eq!(read_flags(flags, NOW * 1000), None, "{flags:#x}");
            assert!(!is_enveloped(flags), "{flags:#x}");
            assert_eq!(value_flags(flags), flags, "{flags:#x}");
        }
        for unit in 1..=3u32 {
            let flags = 16 | HERD_FLAG | unit << UNIT_SHIFT;
            assert!(read_flags(flags, NOW * 1000).is_some(), "{flags:#x}");
            assert!(is_enveloped(flags));
            assert_eq!(value_flags(flags), 16);
        }
    }

    fn round_trip(soft: u64, now: u64, herd: u32, read_at: u64) -> Envelope {
        let flags = Envelope::new(soft).flags(now, herd);
        assert_eq!(
            value_flags(16 | flags),
            16,
            "the state leaves the type bits alone"
        );
        read_flags(16 | flags, read_at).expect("the flags carry an envelope")
    }

    #[test]
    fn up_to_the_longest_herd_timeout_short_ttls_stay_exact_to_the_second() {
        let now = NOW * 1000 + 250;
        let soft = now + 30_000;
        let unit = |herd: u32| (Envelope::new(soft).flags(now, herd) >> UNIT_SHIFT) & 3;
        assert_eq!(unit(MAX_HERD_TIMEOUT), 1);
        assert_eq!(
            unit(MAX_HERD_TIMEOUT + 1),
            2,
            "one second more needs 64 s units"
        );
        let read = round_trip(soft, now, MAX_HERD_TIMEOUT, now);
        assert_eq!(read.soft_expiry_millis, soft.div_ceil(1000) * 1000);
        // Read back right until the item expires, the herd timeout after the soft expiry.
        let late = now + (30 + u64::from(MAX_HERD_TIMEOUT)) * 1000;
        let read = round_trip(soft, now, MAX_HERD_TIMEOUT, late);
        assert_eq!(read.soft_expiry_millis, soft.div_ceil(1000) * 1000);
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
            let env = read_flags(flags, NOW * 1000).expect("an envelope");
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
        assert!(is_enveloped(16 | HERD_FLAG | 1 << UNIT_SHIFT));
        assert!(!is_enveloped(16));
        assert!(!is_enveloped(0xff));
    }
}
