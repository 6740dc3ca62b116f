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
//! use newcache_herd::{read_flags, Envelope, Herd, ManualClock, Clock, ReadDecision, Ttl};
//!
//! let clock = ManualClock::at_secs(1_700_000_000);
//! let herd = Herd::new(60);
//! // Storing for 300 s: the item lives 360 s on the server, the flags say stale after 300.
//! let plan = herd.plan_store(Ttl::Seconds(300), true, clock.now_millis()).unwrap();
//! assert_eq!(plan.exptime, 360);
//! let soft = plan.soft_expiry_millis.expect("finite TTL with herd on is protected");
//!
//! let flags = 16 | Envelope::new(soft).flags(clock.now_millis(), 60); // 16: a Python str
//! let envelope = read_flags(flags, clock.now_millis()).expect("the flags carry the state");
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

mod clock;
mod envelope;
mod herd;
mod policy;
mod ttl;

pub use clock::{Clock, ManualClock, SystemClock};
pub use envelope::{
    is_enveloped, read_flags, value_flags, Envelope, HERD_FLAG, MAX_HERD_TIMEOUT, STATE_MASK,
};
pub use herd::{Herd, CLOCK_SLACK, DEFAULT_HERD_TIMEOUT};
pub use policy::{Policy, ReadDecision, StaleAction, StalePolicy, Xfetch};
pub use ttl::{wire_exptime, StorePlan, Ttl, TtlTooLong, MAX_EXPTIME, MAX_RELATIVE_EXPTIME};
