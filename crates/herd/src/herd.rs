//! [`Herd`]: the herd timeout and the decisions built on it, how a value is stored, what a
//! reader does with an envelope and how one is invalidated.

use crate::envelope::Envelope;
use crate::policy::{Policy, ReadDecision, StaleAction};
use crate::ttl::{wire_exptime, StorePlan, Ttl, TtlTooLong, MAX_EXPTIME, MAX_RELATIVE_EXPTIME};

/// django-newcache's default herd timeout, in seconds.
pub const DEFAULT_HERD_TIMEOUT: u32 = 60;

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
        self.plan_store_at(ttl, herd, now_millis, || now_millis / 1000)
    }

    /// [`Herd::plan_store`] with the soft expiry counted from `now_millis` (a clock of the
    /// caller's choosing) and an exptime past 30 days, which memcached reads as a Unix time,
    /// from `server_now_secs()` (asked only then): the Unix time by the system's clock,
    /// which memcached's own follows. An injected clock (a test's, a clock set back) made a
    /// 30-day TTL an exptime in the past, an item gone at once (an outside audit).
    pub fn plan_store_at(
        &self,
        ttl: Ttl,
        herd: bool,
        now_millis: u64,
        server_now_secs: impl Fn() -> u64,
    ) -> Result<StorePlan, TtlTooLong> {
        let wire_exptime = |secs: u64| {
            let now_secs = if secs > MAX_RELATIVE_EXPTIME {
                server_now_secs()
            } else {
                0
            };
            wire_exptime(secs, now_secs)
        };
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
                wire_exptime(secs)?;
                let with_herd = secs.saturating_add(u64::from(self.herd_timeout));
                StorePlan {
                    soft_expiry_millis: Some(now_millis.saturating_add(secs.saturating_mul(1000))),
                    exptime: wire_exptime(with_herd).unwrap_or(MAX_EXPTIME),
                    expire_now: false,
                }
            }
            Ttl::Seconds(secs) => StorePlan {
                soft_expiry_millis: None,
                exptime: wire_exptime(secs)?,
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

/// Seconds a claim lives past twice the herd timeout: one for memcached's whole-second
/// clock, one for the soft expiry's rounding up to the second.
pub const CLOCK_SLACK: u32 = 2;

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
                // Two seconds more: memcached's clock counts whole seconds (an item may go up
                // to a second early) and the claim's soft expiry is rounded up to the second
                // (up to a second late). Without them, a claim with a herd timeout of 1 s
                // could expire before its own soft expiry, and the key went cold under a
                // winner still loading: every reader then waited for a cold load.
                exptime: reinsert_exptime
                    .saturating_mul(2)
                    .saturating_add(CLOCK_SLACK),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::envelope::read_flags;

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
        assert_eq!(exptime, 60 + CLOCK_SLACK);
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
    fn invalidation_makes_any_envelope_stale_at_once() {
        let herd = Herd::new(45);
        let env = Envelope {
            soft_expiry_millis: u64::MAX,
            compute_millis: 9,
        };
        let now = NOW * 1000 + 999;
        let stale = herd.invalidated(Some(&env), now);
        assert_eq!(stale.compute_millis, 9);
        let Some(read) = read_flags(stale.flags(now, 45), now) else {
            panic!()
        };
        assert!(matches!(
            herd.stale_action(Policy::Lease, &read, now),
            StaleAction::Claim { .. }
        ));
        assert_eq!(herd.invalidated_exptime(), 90);
        assert_eq!(Herd::new(0).invalidated_exptime(), 2);
    }
}
