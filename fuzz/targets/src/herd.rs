//! The herd state decoder (`newcache_herd`): `read_flags` over arbitrary flags and clocks,
//! and the decisions made on what it returns.
//!
//! Input layout (little-endian, zeros past the end): flags (4 bytes), the reader's clock in
//! ms (8), a herd timeout in s (4), a soft expiry in ms (8), a compute time in ms (4),
//! XFetch's beta (8) and u (8); the rest is ignored.
//!
//! Checks:
//! - `read_flags` says "herd-protected" exactly when [`HERD_FLAG`] is set with a unit (bits
//!   11-12), and `value_flags` then keeps only the value's own bits, else all of them;
//! - an envelope written as flags (`Envelope::flags`) at a plausible clock reads back as
//!   documented: the soft expiry rounded up to the second for the 1 s unit, down to the unit
//!   for the coarser ones, brought forward to the window's edge when further out; never
//!   stale before its TTL in the 1 s unit, never past the item's own expiry; the compute
//!   time within a factor of two (0 stays 0);
//! - the decisions (`on_read`, `stale_action` under every policy, `early_recompute`,
//!   `invalidated`, `plan_store`) do not panic on anything those decoders return.

use newcache_herd::{read_flags, value_flags, Envelope, Herd, Policy, Ttl, HERD_FLAG, STATE_MASK};

/// The compute-time classes' representatives, in ms (class 0 is "unknown").
const COMPUTE_CLASSES: [u32; 8] = [0, 10, 40, 160, 640, 2560, 10240, 40960];

/// Clocks from 2001 to 2096, where the round-trip property is stated.
const PLAUSIBLE_NOW: std::ops::Range<u64> = 1_000_000_000_000..4_000_000_000_000;

/// The herd state target.
pub fn herd_state(data: &[u8]) {
    let mut input = crate::Input::new(data);
    let flags = input.u32();
    let now = input.u64();
    let herd_timeout = input.u32();
    let soft = input.u64();
    let compute = input.u32();
    let beta = input.f64();
    let u = input.f64();
    let herd = Herd::new(herd_timeout);

    // Arbitrary flags at an arbitrary clock.
    let carried = read_flags(flags, now);
    let unit = (flags >> 11) & 0b11;
    assert_eq!(
        carried.is_some(),
        flags & HERD_FLAG != 0 && unit != 0,
        "flags {flags:#x}: read_flags and the herd bit and unit disagree"
    );
    if carried.is_some() {
        assert_eq!(
            value_flags(flags) & (HERD_FLAG | STATE_MASK),
            0,
            "value_flags({flags:#x}) keeps herd bits"
        );
    } else {
        assert_eq!(value_flags(flags), flags);
    }
    if let Some(envelope) = carried {
        assert!(
            COMPUTE_CLASSES.contains(&envelope.compute_millis),
            "flags {flags:#x}: compute time {} is no class's",
            envelope.compute_millis
        );
        decide(&herd, &envelope, now, beta, u);
    }

    // An envelope written as flags and read back.
    let written = Envelope {
        soft_expiry_millis: soft,
        compute_millis: compute,
    };
    let state = written.flags(now, herd_timeout);
    assert_eq!(
        state & !(HERD_FLAG | STATE_MASK),
        0,
        "Envelope::flags sets value bits: {state:#x}"
    );
    assert_ne!(state & HERD_FLAG, 0, "Envelope::flags without the herd bit");
    // The value's own type bits ride along untouched.
    let value_bits = flags & 0xff;
    let stored = state | value_bits;
    assert_eq!(value_flags(stored), value_bits);
    let Some(read) = read_flags(stored, now) else {
        panic!("flags {stored:#x} written by Envelope::flags do not read as flags");
    };
    check_compute(compute, read.compute_millis);
    // Stated where the widest window covers twice the herd timeout, as the writer needs.
    if PLAUSIBLE_NOW.contains(&now)
        && u64::from(herd_timeout) * 2 + 2 < ((1 << 15) - 2) * 4096
        && soft < now.saturating_add(10 * 365 * 86_400_000)
        && soft >= now.saturating_sub(u64::from(herd_timeout) * 2000)
    {
        check_round_trip(soft, now, herd_timeout, stored, read.soft_expiry_millis);
    }
    decide(&herd, &read, now, beta, u);
    let _ = herd.plan_store(Ttl::Seconds(u64::from(compute)), flags & 1 != 0, now);
}

/// The soft expiry `read` that flags `stored` (written for `soft` at `now`) gave.
fn check_round_trip(soft: u64, now: u64, herd_timeout: u32, stored: u32, read: u64) {
    let unit_code = (stored >> 11) & 0b11;
    let unit_secs: u64 = match unit_code {
        1 => 1,
        2 => 64,
        3 => 4096,
        _ => panic!("flags {stored:#x} written with unit code {unit_code}"),
    };
    let unit_ms = unit_secs * 1000;
    // Brought forward to the edge of the window the unit covers.
    let edge = now + ((1 << 15) - 2) * unit_ms;
    let clamped = soft.min(edge);
    let expected = if unit_secs == 1 {
        clamped.div_ceil(1000) * 1000
    } else {
        clamped / unit_ms * unit_ms
    };
    let context = format!(
        "soft expiry {soft} written at {now} (herd timeout {herd_timeout} s) as {stored:#x}"
    );
    assert_eq!(read, expected, "{context}: read back as {read}");
    if unit_secs == 1 {
        assert!(read >= soft, "{context}: stale before its TTL");
    }
    // The item lives herd_timeout past its soft expiry: the value must go stale before.
    let item_expiry = soft.saturating_add(u64::from(herd_timeout) * 1000);
    assert!(
        read <= item_expiry + 1000,
        "{context}: stale only after the item expires ({read} > {item_expiry})"
    );
}

/// A compute time written as its class reads back within a factor of two.
fn check_compute(written: u32, read: u32) {
    assert_eq!(
        written == 0,
        read == 0,
        "compute time {written} read as {read}"
    );
    if (5..81_920).contains(&written) {
        assert!(
            u64::from(read) * 2 >= u64::from(written) && read <= written.saturating_mul(2),
            "compute time {written} read as {read}"
        );
    }
}

/// Every decision made on an envelope a reader met.
fn decide(herd: &Herd, envelope: &Envelope, now: u64, beta: f64, u: f64) {
    let _ = herd.on_read(envelope, now);
    for policy in [Policy::Reinsert, Policy::Lease, Policy::Early, Policy::Meta] {
        let _ = herd.stale_action(policy, envelope, now);
    }
    let _ = herd.early_recompute(envelope, now, beta, u);
    let invalidated = herd.invalidated(Some(envelope), now);
    assert!(invalidated.soft_expiry_millis <= now);
    let _ = invalidated.flags(now, herd.herd_timeout);
    let _ = herd.invalidated_exptime();
}
